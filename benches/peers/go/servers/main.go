// The Go peer of tether's echo and HTTP benchmarks: net/http's "Hello, World!" and a
// goroutine-per-connection echo server, the way Go programs are written. benches/run.py builds
// it with GO111MODULE=off (a lone main package, no modules, offline) and runs it with
// GOMAXPROCS=1.
//
//	servers -mode echo -addr 127.0.0.1:PORT
//	servers -mode http -addr 127.0.0.1:PORT
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16384)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func serveEcho(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue // EMFILE and friends: Go's own servers retry too
		}
		go echo(c) // TCP_NODELAY is Go's default
	}
}

func serveHTTP(addr string) error {
	hello := []byte("Hello, World!")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Server", "go")
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", "13")
		w.Write(hello)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	return srv.ListenAndServe()
}

func main() {
	mode := flag.String("mode", "http", "echo or http")
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	var err error
	switch *mode {
	case "echo":
		err = serveEcho(*addr)
	case "http":
		err = serveHTTP(*addr)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	fmt.Fprintln(os.Stderr, "servers:", err)
	os.Exit(1)
}
