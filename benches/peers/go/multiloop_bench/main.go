// Command multiloop_bench is the Go side of tether's benches/multiloop_bench.cpp: two
// goroutines exchanging values over channels, run with GOMAXPROCS=2 as the tether side runs
// two loops.
//
// It is a standalone main package with no module and no dependency outside the standard
// library, so it builds offline:
//
//	GO111MODULE=off GOMAXPROCS=2 go run main.go -case all
//
// multiloop_bench.cpp builds it once and runs it one case at a time. Each result is printed
// on its own line as `result <case>.<metric> <value>`; times are wall-clock nanoseconds.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

var (
	caseName  = flag.String("case", "all", "the case to run: pingpong, pingpong_locked, stream, compute or all")
	benchtime = flag.Duration("benchtime", 300*time.Millisecond, "time per case")
	work      = flag.Int("work", 200000, "compute: iterations per task")
	tasks     = flag.Int("tasks", 64, "compute: tasks")
)

func report(key string, v float64) { fmt.Printf("result %s %.3f\n", key, v) }

// measure runs fn(n) with n growing until it takes benchtime; returns ns per op.
func measure(fn func(n int)) float64 {
	n := 1
	for {
		t0 := time.Now()
		fn(n)
		d := time.Since(t0)
		if d >= *benchtime || n >= 1<<30 {
			return float64(d.Nanoseconds()) / float64(n)
		}
		if d <= 0 {
			n *= 100
			continue
		}
		next := int(float64(n) * 1.2 * float64(*benchtime) / float64(d))
		if next <= n {
			next = n + 1
		}
		if next > 100*n {
			next = 100 * n
		}
		n = next
	}
}

// pingpong: one round trip is a send on ping and a receive on pong, unbuffered.
func pingpong(n int) { roundTrips(n, false) }

// pingpongLocked: the same with each goroutine locked to its own OS thread
// (runtime.LockOSThread), so that every hop wakes the other thread, as a round trip between
// two tether loops does. (The plain pair mostly runs on one P: a send makes the receiver the
// sender's runnext.)
func pingpongLocked(n int) { roundTrips(n, true) }

// roundTrips makes n round trips between this goroutine and an echoing one, both locked to
// their OS threads if lock is set.
func roundTrips(n int, lock bool) {
	if lock {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	ping := make(chan int)
	pong := make(chan int)
	go func() {
		if lock {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		for v := range ping {
			pong <- v
		}
		close(pong)
	}()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
	<-pong
}

// stream: one producer sends n values through a buffered channel to one consumer.
func stream(n int) {
	ch := make(chan int, 1024)
	done := make(chan int)
	go func() {
		s := 0
		for v := range ch {
			s += v
		}
		done <- s
	}()
	for i := 0; i < n; i++ {
		ch <- i
	}
	close(ch)
	<-done
}

func spin(iters int, seed uint64) uint64 {
	x := seed
	for i := 0; i < iters; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

var sink uint64

// compute: `tasks` goroutines of CPU work, all at once.
func compute() float64 {
	t0 := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for t := 0; t < *tasks; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			v := spin(*work, uint64(t)+1)
			mu.Lock()
			sink += v
			mu.Unlock()
		}(t)
	}
	wg.Wait()
	return float64(time.Since(t0).Nanoseconds())
}

func main() {
	flag.Parse()
	fmt.Fprintf(os.Stderr, "GOMAXPROCS=%d\n", runtime.GOMAXPROCS(0))
	all := *caseName == "all"
	if all || *caseName == "pingpong" {
		report("pingpong.ns_per_round_trip", measure(pingpong))
	}
	if all || *caseName == "pingpong_locked" {
		report("pingpong_locked.ns_per_round_trip", measure(pingpongLocked))
	}
	if all || *caseName == "stream" {
		report("stream.ns_per_message", measure(stream))
	}
	if all || *caseName == "compute" {
		best := 0.0
		for i := 0; i < 5; i++ {
			if d := compute(); best == 0 || d < best {
				best = d
			}
		}
		report("compute.ns", best)
	}
}
