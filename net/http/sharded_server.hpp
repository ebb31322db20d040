#pragma once
// sharded_server: one http::server per loop of a runtime, each accepting on its own socket of
// one SO_REUSEPORT group; served, and shut down, as one.

#include "net/address.hpp"
#include "net/http/server.hpp"
#include "runtime/result.hpp"
#include "runtime/runtime.hpp"
#include "runtime/task.hpp"

#include <cstddef>
#include <memory>
#include <vector>

namespace tether::http {

/// An HTTP server on every loop of a runtime (thread-per-core): shard `i` is an
/// `http::server` that accepts, parses and runs handlers on `rt.loop(i)` only, with its own
/// listening socket of one SO_REUSEPORT group, so the kernel spreads connections over the
/// loops and no connection ever moves between threads.
///
/// Every shard runs the same handler with the same options (`max_connections` counts per
/// shard). The handler is copied into each shard and runs on several threads at once: what
/// it shares (a serve_mux is read-only once serving; a counter is not) must be thread-safe.
///
/// Why SO_REUSEPORT per loop rather than accepting on one loop and handing each connection
/// to another with IORING_OP_MSG_RING (IORING_MSG_SEND_FD): with a socket per loop the
/// kernel balances new connections over the loops (by a hash of their addresses) and each
/// connection is accepted, served and closed by one thread, with no cross-loop hop per
/// connection (no extra SQE, wakeup and completion on a second ring) and no accepting loop
/// that becomes the bottleneck or a busier shard than the others. The price: a loop's
/// backlog is its own, so connections queued on a listener that closes are reset (shutdown
/// closes all listeners at once), and the spread is by hash, not by load. Measured with
/// connection churn (connect, one 64 B echo, close; 4 client threads; examples/echo_server
/// on 2 loops, 2026-11-26 on the shared 2-core machine, load average 13-15, medians of
/// two series of 4 and 6 rounds A B A B): accept on loop 0 and hand each connection to loop i % 2
/// with `spawn_on` (a MSG_RING wakeup; the fd needs no IORING_MSG_SEND_FD, the loops share one fd
/// table and tether does not register files) served 0.82x and 1.03x the connections/s of
/// SO_REUSEPORT (within the noise), at 1.03-1.07x its server CPU per connection (~50 us, nearly all
/// the kernel's handshake). Not worth the hop and the accepting loop's extra load; it would pay
/// only with few long-lived connections that hash unevenly.
///
/// Shutdown loses no request: every shard stops accepting and closes its idle connections;
/// a request whose handler has begun is answered before its connection closes; a request
/// still on its way to a connection closed as idle (read by no handler) gets a clean close,
/// as from any HTTP/1.1 server, and may be retried by the client.
///
/// Thread safety: create it, `listen`, `serve` and `shutdown` on one loop of `rt` (or
/// outside the runtime's threads for the constructor and `listen`); `shard(i)` belongs to
/// loop `i`. Lifetime: `rt` must outlive the server, and `serve()` must have returned
/// before the server is destroyed.
class sharded_server {
public:
    sharded_server(runtime& rt, handler h, server_options opts = {});
    /// Serves every request with the synchronous handler `f` (see `sync_handler`), copied
    /// into each shard.
    template <sync_handler_callable F>
    sharded_server(runtime& rt, F&& f, server_options opts = {})
        : sharded_server(rt, from_sync(sync_handler(std::forward<F>(f))), std::move(opts)) {}
    ~sharded_server();
    sharded_server(const sharded_server&) = delete;
    sharded_server& operator=(const sharded_server&) = delete;

    /// Binds one listening socket per loop to `at` (port 0 picks one port for all).
    /// Errors: as `tcp_listener::bind_group`.
    result<void> listen(const net::address& at);
    /// Returns the address the shards listen on.
    result<net::address> local_addr() const;

    /// Serves on every loop until `shutdown()` (then returns success once every shard has
    /// stopped), or until the awaiting context is done (then every shard stops as `serve`
    /// does on one loop, and its error is returned).
    task<result<void>> serve();

    /// Shuts every shard down at once, each on its own loop as `server::shutdown` does: no
    /// more accepts on any loop, idle connections closed, in-flight requests finish. Returns
    /// when all of them have ended, or, if the awaiting context ends first, cancels what is
    /// left on every loop, waits for it, and returns the context's error.
    task<result<void>> shutdown();

    /// Returns the number of shards (the runtime's loops).
    std::size_t size() const noexcept { return shards_.size(); }
    /// Returns shard `i` (use it on loop `i`).
    server& shard(std::size_t i) noexcept { return *shards_[i]; }

private:
    runtime* rt_;
    std::vector<std::unique_ptr<server>> shards_;
};

} // namespace tether::http
