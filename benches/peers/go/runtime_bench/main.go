// Command runtime_bench is the Go side of tether's benches/runtime_bench.cpp: the same
// workloads written the way a Go program would write them, measured the same way.
//
// It is a standalone main package with no module and no dependency outside the standard
// library, so it builds offline:
//
//	GO111MODULE=off GOMAXPROCS=1 go run main.go -case all
//
// runtime_bench.cpp builds it once (GO111MODULE=off go build) and runs it one case at a time
// with GOMAXPROCS=1, alternating with its own runs. Each result is printed on its own line:
//
//	result <case>.<metric> <value>
//
// where the metric names its unit (ns_per_op, ns_per_task, bytes_per_task, ms). Times are the
// process's CPU time (-clock cpu, the default: every thread, the GC's included) or the wall
// clock (-clock wall); runtime_bench passes its own choice.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

var (
	caseName  = flag.String("case", "all", "the case to run, or all")
	benchtime = flag.Duration("benchtime", 200*time.Millisecond, "time per timed case")
	sleepers  = flag.Int("sleepers", 1000000, "goroutines in the sleepers case")
	fanout    = flag.Int("fanout", 100000, "goroutines in the cancel fan-out cases")
	fanoutFds = flag.Int("fanout-fds", 10000, "eventfds the fan-out readers share")
	clock     = flag.String("clock", "cpu", "what to time: cpu (the process's CPU time) or wall")
)

// now returns the process's CPU time (every thread, the GC's included) or the wall clock, in
// nanoseconds, as runtime_bench.cpp times its own cases.
func now() int64 {
	if *clock == "wall" {
		return time.Now().UnixNano()
	}
	var ts syscall.Timespec
	// CLOCK_PROCESS_CPUTIME_ID = 2
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 2,
		uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		panic(e)
	}
	return ts.Nano()
}

func since(t0 int64) time.Duration { return time.Duration(now() - t0) }

func report(key string, v float64) {
	fmt.Printf("result %s %.3f\n", key, v)
}

// measure runs f like testing.B does: n = 1, then n predicted from the last run (1.2x, at most
// 100x the last n), until one run lasts benchtime. f returns the time its n ops took.
func measure(f func(n int) time.Duration) float64 {
	n := 1
	d := f(n)
	for d < *benchtime && n < 1e9 {
		prev := d.Nanoseconds()
		if prev < 1 {
			prev = 1
		}
		next := int(float64(benchtime.Nanoseconds()) * float64(n) / float64(prev))
		next += next / 5
		if next > 100*n {
			next = 100 * n
		}
		if next < n+1 {
			next = n + 1
		}
		n = next
		d = f(n)
	}
	return float64(d.Nanoseconds()) / float64(n)
}

//go:noinline
func ready(ctx context.Context, x int) int {
	if ctx == nil {
		return 0
	}
	return x + 1
}

// spawn_join: start a goroutine that returns at once and wait for it.
func spawnJoin(n int) time.Duration {
	var wg sync.WaitGroup
	start := now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
		wg.Wait()
	}
	return since(start)
}

// await_ready: Go's counterpart of awaiting a task that completes at once is a call that
// takes the context as its first argument.
var sink int

func awaitReady(n int) time.Duration {
	ctx := context.Background()
	s := 0
	start := now()
	for i := 0; i < n; i++ {
		s += ready(ctx, i)
	}
	d := since(start)
	sink = s
	return d
}

// chan_pingpong: a value sent to a goroutine and back over two unbuffered channels.
func chanPingPong(n int) time.Duration {
	ping := make(chan int)
	pong := make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	start := now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	d := since(start)
	close(ping)
	return d
}

// timeout_churn: a call bounded by a deadline that is never reached: the timer is scheduled
// and stopped once per op.
func timeoutChurn(n int) time.Duration {
	parent := context.Background()
	s := 0
	start := now()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(parent, time.Hour)
		s += ready(ctx, i)
		cancel()
	}
	d := since(start)
	sink = s
	return d
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// sleepers: n goroutines each waiting on a one-hour timer or its context, as a cancelable
// sleep is written in Go. Reports the time to start them until all are parked, the RSS they
// add, and the time from cancel until all have returned.
func sleepersCase(n int) {
	ctx, cancel := context.WithCancel(context.Background())
	var started, done sync.WaitGroup
	runtime.GC()
	debug.FreeOSMemory()
	before := rss()
	start := now()
	started.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			t := time.NewTimer(time.Hour)
			started.Done()
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}()
	}
	// With one P the goroutine that wakes us runs on until it parks; the others have parked.
	started.Wait()
	created := since(start)
	after := rss()
	start = now()
	cancel()
	done.Wait()
	canceled := since(start)
	report("sleepers.create_ns_per_task", float64(created.Nanoseconds())/float64(n))
	report("sleepers.bytes_per_task", float64(after-before)/float64(n))
	report("sleepers.cancel_ns_per_task", float64(canceled.Nanoseconds())/float64(n))
}

func eventfd() (int, error) {
	fd, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0,
		uintptr(syscall.O_NONBLOCK|syscall.O_CLOEXEC), 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// cancel_fanout_io: n goroutines blocked reading eventfds that never become readable (n/fds
// per fd, through Go's poller), each fd's reads bounded by the context the way Go ties a
// context to blocking I/O: a goroutine that sets a past deadline when the context is done.
// Reports the time from cancel until every reader has returned.
func cancelFanoutIO(n, fds int) {
	files := make([]*os.File, fds)
	for i := range files {
		fd, err := eventfd()
		if err != nil {
			fmt.Fprintf(os.Stderr, "eventfd: %v\n", err)
			os.Exit(1)
		}
		files[i] = os.NewFile(uintptr(fd), "eventfd")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var started, done sync.WaitGroup
	started.Add(fds + n)
	done.Add(n)
	for _, f := range files {
		go func(f *os.File) {
			started.Done()
			<-ctx.Done()
			f.SetReadDeadline(time.Unix(1, 0))
		}(f)
	}
	var failed int64
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		go func(f *os.File) {
			defer done.Done()
			var buf [8]byte
			started.Done()
			if _, err := f.Read(buf[:]); !os.IsTimeout(err) {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}(files[i%fds])
	}
	started.Wait()
	runtime.Gosched()
	start := now()
	cancel()
	done.Wait()
	d := since(start)
	if failed != 0 {
		fmt.Fprintf(os.Stderr, "cancel_fanout_io: %d reads did not time out\n", failed)
		os.Exit(1)
	}
	report("cancel_fanout_io.ms", float64(d.Nanoseconds())/1e6)
	report("cancel_fanout_io.ns_per_task", float64(d.Nanoseconds())/float64(n))
	for _, f := range files {
		f.Close()
	}
}

// cancel_fanout_done: n goroutines blocked on <-ctx.Done() of one context (Go's context
// cancel fan-out with no I/O).
func cancelFanoutDone(n int) {
	ctx, cancel := context.WithCancel(context.Background())
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			started.Done()
			<-ctx.Done()
		}()
	}
	started.Wait()
	start := now()
	cancel()
	done.Wait()
	d := since(start)
	report("cancel_fanout_done.ms", float64(d.Nanoseconds())/1e6)
	report("cancel_fanout_done.ns_per_task", float64(d.Nanoseconds())/float64(n))
}

func main() {
	flag.Parse()
	fmt.Printf("info go %s GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	timed := map[string]func(int) time.Duration{
		"spawn_join":    spawnJoin,
		"await_ready":   awaitReady,
		"chan_pingpong": chanPingPong,
		"timeout_churn": timeoutChurn,
	}
	order := []string{"spawn_join", "await_ready", "chan_pingpong", "timeout_churn", "sleepers",
		"cancel_fanout_io", "cancel_fanout_done"}
	ran := false
	for _, name := range order {
		if *caseName != "all" && *caseName != name {
			continue
		}
		ran = true
		if f, ok := timed[name]; ok {
			report(name+".ns_per_op", measure(f))
			continue
		}
		switch name {
		case "sleepers":
			sleepersCase(*sleepers)
		case "cancel_fanout_io":
			cancelFanoutIO(*fanout, *fanoutFds)
		case "cancel_fanout_done":
			cancelFanoutDone(*fanout)
		}
	}
	if !ran {
		fmt.Fprintf(os.Stderr, "unknown case %q\n", *caseName)
		os.Exit(2)
	}
}
