package ecslocal

import (
	"testing"
	"time"
)

// A bucket refills at its rate up to its burst, and gives all of a take or none.
func TestBucket_RefillsAtItsRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBucket(20, 100, t0)
	if !b.take(100, t0) || b.take(1, t0) {
		t.Fatal("burst")
	}
	if b.take(21, t0.Add(time.Second)) || !b.take(20, t0.Add(time.Second)) {
		t.Fatal("a second's refill is the rate")
	}
	if !b.take(100, t0.Add(time.Hour)) || b.take(1, t0.Add(time.Hour)) {
		t.Fatal("the refill stops at the burst")
	}
	var none *bucket
	if !none.take(1e9, t0) {
		t.Fatal("no limit refused")
	}
}
