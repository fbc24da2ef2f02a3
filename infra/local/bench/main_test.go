package bench_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

const (
	coldStart = 2 * time.Minute // generous: the storm starts a hundred sandboxes on two cores
	reply     = 30 * time.Second
)

// quantile returns the q-quantile (nearest rank) of ds; ds is sorted in place.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestQuantile_NearestRank pins the percentile the benchmarks report.
func TestQuantile_NearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	if p50, p99, p100 := quantile(ds, 0.5), quantile(ds, 0.99), quantile(ds, 1); p50 != 50 || p99 != 99 || p100 != 100 {
		t.Fatalf("p50 %d p99 %d p100 %d", p50, p99, p100)
	}
	if quantile([]time.Duration{7}, 0.99) != 7 || quantile(nil, 0.5) != 0 {
		t.Fatal("small inputs")
	}
}
