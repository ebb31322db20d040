#pragma once
// The receive side of a stream on the loop's provided-buffer ring. One multishot recv per
// stream takes a buffer from a per-loop pool only when bytes arrive, so an idle connection
// holds no receive buffer; what arrives before anyone reads waits in a short per-stream queue.

#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <cstddef>
#include <cstdint>

namespace tether::net::detail {

struct recv_state;
struct buffer_pool;

/// One read waiting on a stream's receive queue.
struct ring_read : tether::detail::waiter {
    enum class mode : std::uint8_t {
        some,  ///< copy at least one byte into dest
        all,   ///< copy until dest is full
        lease, ///< take one received buffer as it is
    };
    /// A read in mode `md`. The waiter is lazily initialized (see waiter(lazy_init_t)): the
    /// awaiter sets `owner`, ring_read_suspend() the rest before arming. A lease leaves `rs`
    /// (set by ring_read_suspend), `dest`, `size` and `done` (unused) and `pool`, `bid` and
    /// `len` (set with `data`) uninitialized too: a connection's receive loop makes one per
    /// await.
    explicit ring_read(mode md) noexcept
        : waiter(tether::detail::lazy_init), m(md), data(nullptr), end(tether::detail::no_error) {
        if (md != mode::lease) {
            rs = nullptr;
            dest = nullptr;
            size = 0;
            done = 0;
            pool = nullptr;
            len = 0;
            bid = -1;
        }
    }

    mode m;
    recv_state* rs;
    std::byte* dest; // some, all
    std::size_t size;
    std::size_t done;
    buffer_pool* pool; // lease: the buffer handed over
    std::byte* data;
    std::uint32_t len;
    std::int32_t bid; // -1: a heap buffer (the pool was empty), freed with delete[]
    // The stream ended (io_errc::eof, a reset) before enough arrived.
    std::error_code end;
};

/// Takes what the stream's queue holds for `r`, or queues `r` and makes sure a receive is
/// armed. Creates the stream's state (`rs`) on first use. Returns false if the coroutine
/// must not suspend (`r.error`, `r.end` or the bytes say why).
bool ring_read_suspend(recv_state*& rs, int fd, ring_read& r, const context& c,
                       std::coroutine_handle<> h) noexcept;
/// Returns true if reads of this stream must go through its queue: a multishot recv is armed
/// or bytes are waiting.
bool ring_active(const recv_state* rs) noexcept;
/// The stream is closing: drops the queue, cancels what is in flight; the state frees itself
/// once the kernel has let go of it.
void recv_state_close(recv_state* rs) noexcept;
/// Returns a buffer handed out by a lease to its pool (or frees a heap one).
void release_buffer(buffer_pool* pool, std::int32_t bid, std::byte* data) noexcept;

/// Counters, for tests.
struct recv_stats {
    std::uint64_t arms = 0;      ///< multishot recvs submitted
    std::uint64_t pauses = 0;    ///< multishot recvs canceled because the queue was long
    std::uint64_t fallbacks = 0; ///< plain recvs into a heap buffer (the pool was empty)
    std::size_t queued = 0;      ///< buffers waiting now
    bool receiving = false;      ///< a receive is in the kernel now
};
recv_stats recv_state_stats(const recv_state* rs) noexcept;

} // namespace tether::net::detail
