#include "net/detail/recv_ring.hpp"

#include "net/detail/net_service.hpp"
#include "net/io_errc.hpp"
#include "runtime/detail/loop_impl.hpp"

#include <liburing.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sys/mman.h>
#include <vector>

namespace tether::net::detail {

using tether::detail::completion;
using tether::detail::loop_impl;

namespace {

// The pool: 1024 buffers of 4 KiB per loop (4 MiB and 64 KiB, on huge pages where the
// kernel has them, allocated on the first receive). A buffer is lent to the kernel until
// bytes land in it, then to the stream's queue or a lease, then comes back.
constexpr unsigned pool_buffers = buffer_ring::buffers;
constexpr unsigned buffer_size = buffer_ring::buffer_size;
constexpr std::size_t pool_bytes = std::size_t{pool_buffers} * buffer_ring::buffer_stride;
constexpr std::uint16_t pool_group = buffer_group;

// A stream whose queue holds this many buffers unread stops receiving (its multishot recv is
// canceled; the rest waits in the socket, which slows the sender) until a read drains it.
constexpr std::size_t max_queued = 16;

const char pool_key = 0;

// The pool's alignment: an x86-64 (and arm64 4 KiB-granule) huge page.
constexpr std::size_t huge_page = std::size_t{2} << 20;

} // namespace

// buffer_ring's view of the ring is liburing's.
static_assert(sizeof(buffer_ring::slot) == sizeof(io_uring_buf));
static_assert(offsetof(buffer_ring::slot, addr) == offsetof(io_uring_buf, addr));
static_assert(offsetof(buffer_ring::slot, len) == offsetof(io_uring_buf, len));
static_assert(offsetof(buffer_ring::slot, bid) == offsetof(io_uring_buf, bid));
static_assert(offsetof(buffer_ring::slot, resv) == offsetof(io_uring_buf_ring, tail));

struct buffer_pool final : tether::detail::loop_service, buffer_ring {
    io_uring* ring = nullptr;

    explicit buffer_pool(io_uring& r) : ring(&r) {
        std::size_t ring_bytes = pool_buffers * sizeof(io_uring_buf);
        void* m =
            ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (m == MAP_FAILED) {
            return; // no pool: streams receive into heap buffers
        }
        slots = static_cast<slot*>(m);
        // On huge pages where the kernel has transparent ones (also in its common "madvise"
        // mode): the ring hands the buffers out in turn, so on 4 KiB pages each receive lands
        // on a page used 1024 receives ago whose TLB entry is long gone, and the kernel's copy
        // into it walks the page tables first (in a VM, both levels). Two 2 MiB pages cover
        // the pool but its last 64 KiB (on 4 KiB pages: the allocation is rounded up to whole
        // huge pages, the advice is not). The price: those 4 MiB are resident from the first
        // receive, not as the buffers are first used. Where the kernel has no THP, madvise
        // fails (EINVAL) and the pool stays on 4 KiB pages.
        constexpr std::size_t whole = (pool_bytes + huge_page - 1) / huge_page * huge_page;
        base = static_cast<std::byte*>(std::aligned_alloc(huge_page, whole));
        if (base == nullptr) {
            return;
        }
        (void)::madvise(base, pool_bytes, MADV_HUGEPAGE);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uintptr_t>(slots);
        reg.ring_entries = pool_buffers;
        reg.bgid = pool_group;
        if (io_uring_register_buf_ring(ring, &reg, 0) < 0) {
            return; // an old kernel: streams receive into heap buffers
        }
        registered = true;
        for (unsigned i = 0; i < pool_buffers; ++i) {
            recycle(static_cast<std::uint16_t>(i)); // the mmap'ed ring starts with tail 0
        }
    }
    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;
    ~buffer_pool() override {
        if (registered) {
            io_uring_unregister_buf_ring(ring, pool_group);
        }
        std::free(base);
        if (slots != nullptr) {
            ::munmap(slots, pool_buffers * sizeof(io_uring_buf));
        }
    }

    static buffer_pool& of(loop_impl& l) {
        if (auto* s = l.service(&pool_key)) {
            return static_cast<buffer_pool&>(*s);
        }
        return static_cast<buffer_pool&>(
            l.add_service(&pool_key, std::make_unique<buffer_pool>(l.ring())));
    }
};

buffer_ring& loop_buffer_ring(loop* l) {
    return buffer_pool::of(l->impl());
}

namespace {

using chunk = recv_chunk;

void drop(buffer_ring* pool, const chunk& c) noexcept {
    release_buffer(pool, c.bid, c.data);
}

} // namespace

struct recv_state final : completion, recv_core, orphan {
    // Counters for recv_state_stats().
    struct {
        std::uint32_t arms = 0, pauses = 0, fallbacks = 0;
    } stats;

    // A plain recv into a heap buffer, when the pool is empty or unavailable (its flags are
    // recv_core's fallback_inflight and fallback_canceling).
    struct fallback_op : completion {
        recv_state* self = nullptr;
        std::byte* buf = nullptr;
    } fallback;

    recv_state(int f, loop* l, buffer_pool* p) : recv_core(f, l, p) {
        static_assert(sizeof(recv_state) <= 152, "keep an idle stream's state small");
        complete = &on_cqe;
        fallback.self = this;
        fallback.complete = &on_fallback_cqe;
    }
    static recv_state& of(recv_core* c) noexcept { return static_cast<recv_state&>(*c); }
    static const recv_state& of(const recv_core* c) noexcept {
        return static_cast<const recv_state&>(*c);
    }

    ~recv_state() override {
        // Only reached once the kernel has let go (or the loop is ending); the pool may be
        // gone already, so queued pool buffers are not returned (close() returned them).
        delete[] fallback.buf;
    }

    loop_impl& impl() const noexcept { return lp->impl(); }
    std::size_t queued() const noexcept { return queue.size() - head; }
    bool in_flight() const noexcept { return armed || fallback_inflight; }

    void push(chunk c) {
        queue.push_back(c);
        backlog = true;
    }
    void pop() noexcept {
        if (++head == queue.size()) {
            head = 0;
            backlog = static_cast<bool>(end);
            if (queue.capacity() > 2) {
                // A burst is over: an idle stream keeps no queue storage (a waiting receive
                // takes new bytes without the queue, so it is rarely needed again soon).
                std::vector<chunk>().swap(queue);
            } else {
                queue.clear();
            }
        }
    }

    void arm() {
        if (in_flight() || end || !open) {
            return;
        }
        if (starved || !pool->registered) {
            start_fallback();
            return;
        }
        io_uring_sqe* sqe = impl().get_sqe();
        io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = pool_group;
        io_uring_sqe_set_data(sqe, static_cast<completion*>(this));
        armed = true;
        canceling = false;
        ++stats.arms;
    }
    void start_fallback() {
        if (fallback.buf == nullptr) {
            fallback.buf = new std::byte[buffer_size];
        }
        io_uring_sqe* sqe = impl().get_sqe();
        io_uring_prep_recv(sqe, fd, fallback.buf, buffer_size, 0);
        io_uring_sqe_set_data(sqe, static_cast<completion*>(&fallback));
        fallback_inflight = true;
        fallback_canceling = false;
        ++stats.fallbacks;
    }
    void cancel(completion* target, bool& flag) {
        if (flag) {
            return;
        }
        impl().cancel_in_kernel(target);
        flag = true;
    }

    // Moves queued bytes into `r` as its mode wants; true if `r` is satisfied (or the stream
    // has ended and nothing more will come).
    bool satisfy(ring_read& r) noexcept {
        if (r.m == ring_read::mode::lease) {
            if (queued() > 0) {
                chunk& c = queue[head];
                r.pool = pool;
                r.bid = c.bid;
                r.len = c.len - c.off;
                if (c.bid >= 0) {
                    r.data = c.data + c.off; // the pool takes the buffer back by its id
                } else {
                    // A heap buffer is freed by its address: move a partly read one's rest
                    // to its start.
                    if (c.off > 0) {
                        std::memmove(c.data, c.data + c.off, r.len);
                    }
                    r.data = c.data;
                }
                pop();
                return true;
            }
        } else {
            copy_read& cr = static_cast<copy_read&>(r);
            while (queued() > 0 && cr.done < cr.size) {
                chunk& c = queue[head];
                std::size_t n = std::min<std::size_t>(c.len - c.off, cr.size - cr.done);
                std::memcpy(cr.dest + cr.done, c.data + c.off, n);
                cr.done += n;
                c.off += static_cast<std::uint32_t>(n);
                if (c.off == c.len) {
                    drop(pool, c);
                    pop();
                }
            }
            if (r.m == ring_read::mode::some ? cr.done > 0 : cr.done == cr.size) {
                return true;
            }
        }
        if (end && queued() == 0) {
            r.end = end;
            return true;
        }
        return false;
    }

    // New bytes or an end: hand them to the waiting reader, and keep receiving if it wants
    // more and nothing is in flight.
    void wake() noexcept {
        if (ring_read* r = reader) {
            if (satisfy(*r)) {
                reader = nullptr;
                r->finish(tether::detail::no_error);
            } else if (!in_flight()) {
                arm();
            }
        }
    }

    void received(chunk c) {
        push(c);
        if (queued() >= max_queued && armed && !canceling && reader == nullptr) {
            ++stats.pauses;
            cancel(this, canceling);
        }
    }

    void ended(int res) noexcept {
        if (res == 0) {
            end = io_errc::eof;
        } else if (res != -ECANCELED) {
            end = system_error_code(-res);
        }
        backlog = backlog || static_cast<bool>(end);
    }

    // Gives buffer `bid`, holding `res` bytes, straight to the waiting receive `r`.
    static void hand_over(recv_state* rs, ring_read* r, std::uint16_t bid, int res) noexcept {
        rs->reader = nullptr;
        r->pool = rs->pool;
        r->bid = bid;
        r->data = rs->pool->buffer(bid);
        r->len = static_cast<std::uint32_t>(res);
        tether::detail::finish_completed(*r);
    }

    static void on_cqe(completion* c, int res, std::uint32_t flags) noexcept {
        // Through a reference: `c` is never null, and a pointer cast would test it.
        auto* rs = &static_cast<recv_state&>(*c);
        ring_read* r = rs->reader;
        // A waiting read means an open stream (close() finishes it) and nothing queued (it
        // would have taken it: wake() runs after every push).
        assert(r == nullptr || (rs->open && rs->queued() == 0));
        if (res > 0 && (flags & IORING_CQE_F_MORE) != 0 && r != nullptr &&
            r->m == ring_read::mode::lease) {
            // The common case, in a function without a frame: a receive is waiting, nothing
            // is queued before these bytes, and the multishot recv stays armed. The buffer
            // goes straight to the reader (what satisfy() would do after the queue).
            hand_over(rs, r, static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT), res);
            return;
        }
        on_other_cqe(rs, res, flags);
    }

    [[gnu::noinline]] static void on_other_cqe(recv_state* rs, int res,
                                               std::uint32_t flags) noexcept {
        bool more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more) {
            rs->armed = false;
            rs->canceling = false;
        }
        if (res > 0) {
            auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
            if (rs->open) {
                ring_read* r = rs->reader;
                if (r != nullptr && r->m == ring_read::mode::lease && rs->queued() == 0) {
                    // A receive is waiting and nothing is queued before these bytes: hand the
                    // buffer straight over (what satisfy() would do after a trip through the
                    // queue). The multishot recv stays armed if the kernel said so.
                    hand_over(rs, r, bid, res);
                    return;
                }
                rs->received(chunk{rs->pool->buffer(bid), static_cast<std::uint32_t>(res), 0, bid});
            } else {
                rs->pool->recycle(bid);
            }
        } else if (res == -ENOBUFS) {
            rs->starved = true; // the pool is dry: the next receive uses a heap buffer
        } else if (rs->open) {
            rs->ended(res);
        }
        rs->finish_cqe(more);
    }

    static void on_fallback_cqe(completion* c, int res, std::uint32_t) noexcept {
        auto* rs = static_cast<fallback_op*>(c)->self;
        rs->fallback_inflight = false;
        rs->fallback_canceling = false;
        rs->starved = false; // try the pool again next time
        if (res > 0 && rs->open) {
            // The buffer goes with the bytes; the next fallback allocates another.
            rs->received(chunk{std::exchange(rs->fallback.buf, nullptr),
                               static_cast<std::uint32_t>(res), 0, -1});
        } else if (rs->open) {
            rs->ended(res);
        }
        rs->finish_cqe(false);
    }

    void finish_cqe(bool more) noexcept {
        if (!open) {
            if (!more && !in_flight()) {
                net_service::of(impl()).release(this);
            }
            return;
        }
        wake();
    }
};

void ring_read_cancel(tether::detail::waiter* w) noexcept {
    auto* me = static_cast<ring_read*>(w);
    me->rs->reader = nullptr;
    // The multishot recv belongs to the stream and stays armed: bytes that arrive later
    // wait in the queue for the next read. Nothing of this read is in the kernel.
    me->finish(me->cancel_error());
}

bool ring_read_suspend(recv_core*& core, int fd, ring_read& r, const context& c,
                       std::coroutine_handle<> h) noexcept {
    if (std::error_code e = c.err()) {
        r.error = e; // sticky: a done context takes nothing from the queue
        return false;
    }
    if (r.m != ring_read::mode::lease && static_cast<copy_read&>(r).size == 0) {
        return false;
    }
    loop* l = tether::detail::current_loop();
    assert(l != nullptr && "reads must be awaited on a running loop");
    if (core == nullptr) {
        core = new recv_state(fd, l, &buffer_pool::of(l->impl()));
    }
    recv_state* rs = &recv_state::of(core);
    assert(rs->lp == l && "a stream receives on one loop");
    assert(rs->reader == nullptr && "one read at a time");
    r.rs = rs;
    if (rs->satisfy(r)) {
        return false;
    }
    r.lp = l;
    r.handle = h;
    r.on_cancel = &ring_read_cancel;
    if (!r.arm(c)) {
        return false;
    }
    rs->reader = &r;
    rs->arm();
    return true;
}

bool ring_active(const recv_core* core) noexcept {
    if (core == nullptr) {
        return false;
    }
    const recv_state& rs = recv_state::of(core);
    return rs.in_flight() || rs.queued() > 0;
}

bool register_fd(std::int16_t& slot, tether::detail::file_table& files, int fd) noexcept {
    int s = files.add(fd);
    slot = static_cast<std::int16_t>(s < 0 ? -1 : s); // file_table::max_size fits
    return s >= 0;
}

void release_fd(std::int16_t& slot, tether::detail::file_table& files) noexcept {
    if (slot >= 0) {
        files.remove(slot);
    }
    slot = -1;
}

bool register_fd(recv_core& rs) noexcept {
    return register_fd(rs.slot, rs.lp->impl().files(), rs.fd);
}

void recv_state_close(recv_core* core) noexcept {
    if (core == nullptr) {
        return;
    }
    recv_state* rs = &recv_state::of(core);
    rs->open = false;
    // Before the stream closes its fd (the multishot recv uses the plain fd and holds its
    // own reference until the cancel below ends it).
    release_fd(rs->slot, rs->impl().files());
    for (std::size_t i = rs->head; i < rs->queue.size(); ++i) {
        drop(rs->pool, rs->queue[i]);
    }
    rs->queue.clear();
    rs->head = 0;
    rs->backlog = static_cast<bool>(rs->end);
    if (ring_read* r = std::exchange(rs->reader, nullptr)) {
        r->finish(io_errc::closed);
    }
    if (!rs->in_flight()) {
        delete rs;
        return;
    }
    if (rs->armed) {
        rs->cancel(rs, rs->canceling);
    }
    if (rs->fallback_inflight) {
        rs->cancel(&rs->fallback, rs->fallback_canceling);
    }
    net_service::of(rs->impl()).keep(rs); // freed by the last CQE, or with the loop
}

recv_stats recv_state_stats(const recv_core* core) noexcept {
    if (core == nullptr) {
        return {};
    }
    const recv_state* rs = &recv_state::of(core);
    recv_stats s;
    s.arms = rs->stats.arms;
    s.pauses = rs->stats.pauses;
    s.fallbacks = rs->stats.fallbacks;
    s.queued = rs->queued();
    s.receiving = rs->in_flight();
    s.fixed_slot = rs->slot >= 0 ? rs->slot : -1;
    return s;
}

} // namespace tether::net::detail
