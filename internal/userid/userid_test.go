package userid_test

import (
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/userid"
)

func TestValid(t *testing.T) {
	for id, want := range map[string]bool{
		"user_a": true, "user_" + strings.Repeat("Z", 64): true, "user_2Nd8xYqClerk": true,
		"user_": false, "user_" + strings.Repeat("Z", 65): false, "user-a": false, "usr_a": false,
		"user_a b": false, "user_a.b": false, "user__": false, "": false,
		"USER_a": false, "user_a/../user_b": false, "user_ābc": false, "user_１": false, "user_a\x00": false,
	} {
		if got := userid.Valid(id); got != want {
			t.Errorf("Valid(%q) = %v, want %v", id, got, want)
		}
	}
	if userid.MaxLen != len("user_")+64 {
		t.Fatalf("MaxLen = %d", userid.MaxLen)
	}
}
