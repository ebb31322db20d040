#pragma once
// The receive side of a stream on the loop's provided-buffer ring. One multishot recv per
// stream takes a buffer from a per-loop pool only when bytes arrive, so an idle connection
// holds no receive buffer; what arrives before anyone reads waits in a short per-stream queue.

#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <vector>

namespace tether::detail {
class file_table;
}

namespace tether::net::detail {

struct ring_read;

/// A loop's pool of receive buffers, as streams and recv_buffer use it: `buffers` buffers
/// of `buffer_size` bytes, `buffer_stride` apart from `base`, lent to the kernel through a
/// provided-buffer ring.
/// recv_ring.cpp's buffer_pool makes it and registers the ring.
///
/// Thread safety: the loop's thread only.
struct buffer_ring {
    static constexpr unsigned buffers = 1024; // a power of two
    static constexpr unsigned buffer_size = 4096;
    /// One cache line more than a buffer: buffer i starts on cache colour i mod 64. At a
    /// stride of 4096 every buffer's first line fell in the same 1/64 of the L1 and L2 sets,
    /// so the lines of a few hundred buffers evicted each other and the kernel's copy of a
    /// small message (it lands at a buffer's start) missed to L3 as the ring went round.
    static constexpr unsigned buffer_stride = buffer_size + 64;

    /// One entry of the ring as the kernel reads it (struct io_uring_buf; recv_ring.cpp
    /// checks the layout against liburing's). Entry 0's `resv` is the ring's tail.
    struct slot {
        std::uint64_t addr;
        std::uint32_t len;
        std::uint16_t bid;
        std::uint16_t resv;
    };

    slot* slots = nullptr;
    std::byte* base = nullptr;
    bool registered = false; // with the kernel: else streams receive into heap buffers

    std::byte* buffer(std::uint16_t bid) const noexcept {
        return base + std::size_t{bid} * buffer_stride;
    }
    /// Lends buffer `bid` to the kernel again (io_uring_buf_ring_add and _advance).
    void recycle(std::uint16_t bid) noexcept {
        std::uint16_t tail = slots[0].resv; // only this thread writes it
        slot& s = slots[tail & (buffers - 1)];
        s.addr = reinterpret_cast<std::uintptr_t>(buffer(bid));
        s.len = buffer_size;
        s.bid = bid;
        // The kernel reads the tail with acquire: the entry is visible before the tail.
        __atomic_store_n(&slots[0].resv, static_cast<std::uint16_t>(tail + 1), __ATOMIC_RELEASE);
    }
};

/// The buffer group id the loop's pool is registered under (IOSQE_BUFFER_SELECT's buf_group).
inline constexpr std::uint16_t buffer_group = 0x7e7;

/// The pool of `l` (the loop's thread only), made on first use: its `registered` says whether
/// the kernel took its ring. Errors: throws std::bad_alloc.
buffer_ring& loop_buffer_ring(loop* l);

/// Bytes received and not yet read: a pool buffer (bid >= 0) or a heap one.
struct recv_chunk {
    std::byte* data;
    std::uint32_t len;
    std::uint32_t off;
    std::int32_t bid;
};

/// A stream's receive state: the fields that the inline receive path (receive_awaiter) reads;
/// recv_ring.cpp's recv_state adds the multishot recv's completion and the rest. Made by the
/// stream's first pool-backed read, on the loop it reads on.
///
/// Thread safety: that loop's thread only.
struct recv_core {
    recv_core(int f, loop* l, buffer_ring* p) noexcept : lp(l), pool(p), fd(f) {}
    recv_core(const recv_core&) = delete;
    recv_core& operator=(const recv_core&) = delete;

    // Every stream that receives has one: the fields are packed to keep it small. The first
    // 32 bytes are what a connection's round trip touches (the CQE handler's hand-over, the
    // inline receive, a write's fixed file): with the completion right before them
    // (recv_state), one cache line more often than not. A server holds more connections than
    // its L1 cache holds states, and each line is a miss per round trip.
    ring_read* reader = nullptr;
    loop* lp;
    buffer_ring* pool;
    // >= 0: the fd's slot in the loop's table of registered files. Else -1 minus the reads
    // and writes issued so far on the loop (see count_fixed_use()). One field: the state
    // stays within its size.
    std::int16_t slot = -1;
    // At most max_queued plus one CQE batch (bounded by the pool's 1024 buffers) past the
    // start.
    std::uint16_t head = 0;
    bool open = true;
    bool armed = false; // a multishot recv is in the kernel
    // The queue holds bytes, or the stream has ended (`end`): what lease_waits() tests, in
    // the line it reads anyway. Set by recv_state's push() and ended(), cleared by a pop()
    // that drains the queue of a stream that has not ended.
    bool backlog = false;
    bool canceling = false; // and an ASYNC_CANCEL for it was sent
    int fd;
    bool starved = false;            // the pool ran dry: the next receive uses a heap buffer
    bool fallback_inflight = false;  // recv_state's plain recv into a heap buffer
    bool fallback_canceling = false; // and an ASYNC_CANCEL for it was sent
    std::vector<recv_chunk> queue;   // from head
    std::error_code end;             // why the stream ended, once the queue is drained

    /// Returns true if a lease may wait for the next CQE at once: the multishot recv is armed,
    /// nothing is queued, the stream has not ended (what ring_read_suspend() would find).
    bool lease_waits() const noexcept {
        assert(backlog == (!queue.empty() || static_cast<bool>(end)));
        return armed && !backlog;
    }
};

/// One read waiting on a stream's receive queue: a lease as it is, a copying read as a
/// copy_read.
struct ring_read : tether::detail::waiter {
    enum class mode : std::uint8_t {
        some,  ///< copy at least one byte into dest
        all,   ///< copy until dest is full
        lease, ///< take one received buffer as it is
    };
    /// A read in mode `md` (some and all: a copy_read). The waiter is lazily initialized (see
    /// waiter(lazy_init_t)): the awaiter sets `owner`, it or ring_read_suspend() the rest
    /// before arming. A lease leaves `rs` (set before arming) and `pool`, `bid` and `len` (set
    /// with `data`) uninitialized too: a connection's receive loop makes one per await.
    explicit ring_read(mode md) noexcept
        : waiter(tether::detail::lazy_init), data(nullptr), m(md), end(tether::detail::no_error) {
        if (md != mode::lease) {
            len = 0;
            pool = nullptr;
            bid = -1;
            rs = nullptr;
        }
    }

    // What the CQE handler's hand-over reads and writes (the mode, the buffer) and what every
    // lease sets, right after the waiter's hot end (its flags and lp), `len` in the waiter's
    // tail padding: a connection's receive loop touches 96 contiguous bytes of its reader per
    // CQE. A lease has no other field: the echo frame holds a ring_read and a write's op at
    // once (the coroutine keeps every awaiter's storage), and each byte of it counts.
    std::uint32_t len;
    buffer_ring* pool; // lease: the buffer handed over
    std::byte* data;
    std::int32_t bid; // -1: a heap buffer (the pool was empty), freed with delete[]
    mode m;
    recv_core* rs;
    // The stream ended (io_errc::eof, a reset) before enough arrived.
    std::error_code end;
};

/// A read that copies into the caller's buffer (ring_read::mode some or all).
struct copy_read : ring_read {
    explicit copy_read(mode md) noexcept : ring_read(md), dest(nullptr), size(0), done(0) {
        assert(md != mode::lease);
    }

    std::byte* dest;
    std::size_t size;
    std::size_t done;
};

/// Takes what the stream's queue holds for `r`, or queues `r` and makes sure a receive is
/// armed. Creates the stream's state (`rs`) on first use. Returns false if the coroutine
/// must not suspend (`r.error`, `r.end` or the bytes say why).
bool ring_read_suspend(recv_core*& rs, int fd, ring_read& r, const context& c,
                       std::coroutine_handle<> h) noexcept;
/// Reads and writes a stream issues on its receiving loop before it registers its fd in the
/// loop's file table: an io_uring_register call costs about as much as a few dozen fget/fput
/// pairs, and a short connection never gets there.
inline constexpr std::uint16_t fixed_after_uses = 32;
/// Registers `fd` in `files` and keeps its slot in `slot` (the form of recv_core::slot);
/// false if the table is full or the kernel refused: `slot` is -1 then (the count starts
/// again).
bool register_fd(std::int16_t& slot, tether::detail::file_table& files, int fd) noexcept;
/// Empties `slot` in `files` if it names one (before the fd closes: the table's reference
/// would keep the socket open; ops issued on the slot keep the file until they complete) and
/// sets it to -1.
void release_fd(std::int16_t& slot, tether::detail::file_table& files) noexcept;
/// Registers `rs`'s fd in its loop's file table (register_fd above).
bool register_fd(recv_core& rs) noexcept;
/// Counts one read or write issued on `rs`'s loop while its fd has no slot; the one that
/// reaches fixed_after_uses registers it. Returns true if the fd has a slot now.
inline bool count_fixed_use(recv_core& rs) noexcept {
    --rs.slot;
    return rs.slot <= -1 - fixed_after_uses && register_fd(rs);
}
/// Returns true if reads of this stream must go through its queue: a multishot recv is armed
/// or bytes are waiting.
bool ring_active(const recv_core* rs) noexcept;
/// The on_cancel of a waiting ring_read: it gives up its place (nothing of it is in the
/// kernel) and finishes with the context's error.
void ring_read_cancel(tether::detail::waiter* w) noexcept;
/// The stream is closing: drops the queue, cancels what is in flight; the state frees itself
/// once the kernel has let go of it.
void recv_state_close(recv_core* rs) noexcept;
/// Returns a buffer handed out by a lease to its pool (or frees a heap one).
inline void release_buffer(buffer_ring* pool, std::int32_t bid, std::byte* data) noexcept {
    if (bid >= 0) {
        pool->recycle(static_cast<std::uint16_t>(bid));
    } else {
        delete[] data;
    }
}

/// Counters, for tests.
struct recv_stats {
    std::uint64_t arms = 0;      ///< multishot recvs submitted
    std::uint64_t pauses = 0;    ///< multishot recvs canceled because the queue was long
    std::uint64_t fallbacks = 0; ///< plain recvs into a heap buffer (the pool was empty)
    std::size_t queued = 0;      ///< buffers waiting now
    bool receiving = false;      ///< a receive is in the kernel now
    int fixed_slot = -1;         ///< the fd's slot in the loop's table of registered files
};
recv_stats recv_state_stats(const recv_core* rs) noexcept;

} // namespace tether::net::detail
