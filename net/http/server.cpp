#include "net/http/server.hpp"

#include "context/with_cancel.hpp"
#include "context/without_cancel.hpp"
#include "net/detail/recv_ring.hpp"
#include "net/http/detail/put.hpp"
#include "net/http/status.hpp"
#include "net/io_errc.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/io.hpp"
#include "runtime/spawn.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <list>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

namespace tether::http {

namespace detail {

// Bytes a connection buffers before it flushes responses queued by pipelined requests.
constexpr std::size_t flush_threshold = 64 * 1024;
// A request body left unread this small is drained to keep the connection; larger: close.
constexpr std::uint64_t drain_limit = 256 * 1024;
// How long, and how many bytes, a connection closing after an error answer reads and drops.
constexpr std::chrono::seconds linger_time{1};
constexpr std::size_t linger_bytes = 1 << 20;

// Output buffers no connection holds, the most recently given back first. A connection holds
// one only while it has bytes queued or being sent: with a thousand keep-alive connections
// taking turns, the few sends in flight at a time reuse the same warm buffers, where each
// connection's own buffer would be cold at its every turn (and written cold: a miss per
// line of responses). Idle connections hold none.
struct out_pool {
    std::vector<byte_buffer::storage> spares;
    std::size_t limit = 0; // keeps at most this many (the server's connections)

    ~out_pool() {
        for (const byte_buffer::storage& s : spares) {
            delete[] s.data;
        }
    }
};

// The bytes a connection has queued to send, in a byte_buffer whose storage comes from the
// pool when bytes are first queued and goes back once they are sent (`release`).
struct out_buffer : byte_buffer {
    out_pool* pool = nullptr;

    // Buffers this large or larger are freed, not pooled (a large response's).
    static constexpr std::size_t pooled_max = 64 * 1024;
    // A buffer made for the pool: a turn's worth of small responses.
    static constexpr std::size_t first_cap = 4096;

    /// Returns where `n` more bytes may be written: in a spare from the pool if the buffer
    /// has no storage yet.
    char* room(std::size_t n) {
        if (capacity() - size() < n) [[unlikely]] {
            refill(n);
        }
        return tail();
    }
    [[gnu::noinline]] void refill(std::size_t n) {
        if (capacity() == 0 && pool != nullptr && !pool->spares.empty() &&
            pool->spares.back().cap >= n) {
            adopt(pool->spares.back());
            pool->spares.pop_back();
            return;
        }
        grow(n, first_cap);
    }
    void append(std::string_view s) { commit(put_short(room(s.size()), s)); }
    out_buffer& operator+=(std::string_view s) {
        append(s);
        return *this;
    }
    void push_back(char ch) {
        char* p = room(1);
        *p = ch;
        commit(p + 1);
    }
    /// Drops what is queued and gives the storage back to the pool (the bytes were sent).
    void release() noexcept {
        storage s = release_storage();
        if (s.data == nullptr) {
            return;
        }
        if (pool != nullptr && s.cap < pooled_max && pool->spares.size() < pool->limit) {
            try {
                pool->spares.push_back(s);
                return;
            } catch (...) {
            }
        }
        delete[] s.data;
    }
};

// A send the connection does not wait for (write-behind): the responses of a turn go out
// while the connection already waits for its next requests, and the send's completion only
// marks it done (resubmitting the rest of a short send), without resuming the connection's
// task. So a keep-alive turn is one visit to the connection's state (read, answer, send and
// read again), not two (the second for the send's completion): with many connections, those
// lines are cold again by the time the send completes. (Its completion is `conn::sop`; the
// handler finds the connection from its address.)
//
// The connection's reads of request bytes are its own too (`conn::rop`): the completion keeps
// the outcome in the connection's first lines and resumes the task, touching none of the
// per-await state a generic read keeps in the task's frame and its await chain. Its
// cancellation (a timeout, shutdown, the server's context) comes from one registration on
// the connection's context made when the connection starts (conn_watch), not one per read.
//
// Where the loop has a provided-buffer ring (net's pool), the connection keeps one multishot
// recv armed on it: the kernel picks a pool buffer when bytes arrive, and the completion
// copies them into `in` and gives the buffer back at once. So a keep-alive turn submits no
// recv and arms no poll (one SQE and two CQEs per turn, as the raw io_uring peer; a recv per
// turn made two SQEs and a poll arm), the parser still reads `in` in place, and no pool
// buffer is held while a handler runs or while the connection is idle. Bytes that arrive
// while the task is not waiting for them go after `in_end` as far as `in` has room (the
// request's views into `in` stay where they are); the rest waits in its pool buffers
// (`conn::held`) and the recv is canceled (a pause: once the kernel has taken what the
// socket held, the client waits) until the task takes them and waits again, which re-arms
// it. Elsewhere (no ring, another loop, one wait after ENOBUFS: the pool was dry), a plain
// recv per wait, into `in`.
struct recv_behind : tether::detail::completion {
    // The outcome for a waiting task: > 0 bytes were added to `in`, 0 at EOF, or -errno.
    int res = 0;
    // The last plain recv left bytes in the socket (IORING_CQE_F_SOCK_NONEMPTY): the next one
    // tries at once. Otherwise it waits for the socket to be readable first
    // (IORING_RECVSEND_POLL_FIRST, where `poll_first` says the kernel has it): a keep-alive
    // client sends its next requests only once it has the responses, so a recv made right
    // after a turn finds nothing, and the attempt (the socket's lock, an empty receive
    // queue) would be wasted before the poll is armed: 0.25 us of the server's 14.7 us per
    // turn of 16 pipelined requests at 1000 connections (perf).
    bool nonempty : 1 = false;
    bool poll_first : 1 = false;
    bool multishot : 1 = false; // receive with a multishot recv on the loop's pool
    bool armed : 1 = false;     // the multishot recv is in the kernel
    bool canceling : 1 = false; // and a cancel for it was sent (a pause, the end, ctx done)
    bool plain : 1 = false;     // a plain recv is in the kernel
    bool waiting : 1 = false;   // the task waits for bytes (`waiter` is the recv's)
    bool stopping : 1 = false;  // the task waits for the multishot recv's last CQE
    bool fresh : 1 = false;     // bytes were added to `in` while the task was not waiting
    bool holding : 1 = false;   // `held` has bytes (that come before any later ones)
    bool ended : 1 = false;     // the multishot recv saw the stream end (`end` says how)
    bool starved : 1 = false;   // ENOBUFS ended it: the next wait receives with a plain recv
    std::int16_t end = 0;       // with `ended`: 0 (EOF) or -errno
};

// A connection's input buffer: its bytes and their count (a std::vector<char> without the
// capacity), moved to and from the server's spares (server_state::in_spares) by a few stores.
struct in_buffer {
    char* p = nullptr;
    std::size_t n = 0;

    in_buffer() = default;
    in_buffer(const in_buffer&) = delete;
    in_buffer& operator=(const in_buffer&) = delete;
    ~in_buffer() { delete[] p; }

    char* data() const noexcept { return p; }
    std::size_t size() const noexcept { return n; }
    bool empty() const noexcept { return n == 0; }
    /// Grows (or shrinks) to `m` bytes, keeping those that fit. Errors: throws std::bad_alloc.
    void resize(std::size_t m) {
        char* q = new char[m];
        if (n != 0) {
            std::memcpy(q, p, std::min(n, m));
        }
        delete[] p;
        p = q;
        n = m;
    }
};

// Received bytes a busy connection had no room for (see recv_behind), in their pool buffers,
// first to last from `head`.
struct held_bytes {
    std::vector<net::detail::recv_chunk> q;
    std::size_t head = 0;
};

// What a keep-alive turn touches comes first, in three cache lines (the struct is aligned to
// one): the buffers, the flags, the deadline, the body's counts, the write-behind send and
// the time the timer fires at. With many connections each turn finds them cold.
struct alignas(64) conn {
    server_state* srv = nullptr;
    net::tcp_stream sock;
    in_buffer in;
    // The loop's pool the multishot recv takes buffers from (see recv_behind), next to the
    // fields its completion writes: no trip through `srv`.
    net::detail::buffer_ring* ring = nullptr;
    std::size_t in_start = 0;
    std::size_t in_end = 0;
    out_buffer out;
    bool idle = true;
    bool close_after = false;
    bool read_eof = false;    // the last read_more() failed because the client shut down its side
    bool linger = false;      // answered an error: drain what the client still sends, then close
    bool timer_armed = false; // the timer is in the loop's heap
    // The write-behind send of out's [0, send_size): while it is in flight, nothing is
    // appended to `out` (the task waits for it before it handles the bytes of its next read).
    bool send_inflight = false;
    bool send_failed = false;
    bool send_canceled = false; // a kernel cancel was sent for it
    bool send_awaited = false;  // `waiter` waits for the send to end
    bool ending = false;        // the task is past its loop: a failed send cancels nothing
    bool ctx_done = false;      // the connection's context is done (conn_watch saw it)
    // The body of the current request.
    bool body_chunked = false;
    bool body_done = true;
    bool continue_pending = false;
    bool body_error = false;
    time_point deadline = time_point::max(); // the phase's deadline; max(): none
    std::uint64_t body_left = 0;             // Content-Length bytes still to read
    std::uint64_t body_total = 0;
    std::size_t send_size = 0;
    std::size_t send_done = 0;
    tether::detail::completion sop; // the write-behind send's
    recv_behind rop;                // the connection's recv
    // The coroutine waiting for the recv (the connection's task: the recv is in the kernel)
    // or, with send_awaited, for the send to end (the task, or a flush() under it).
    std::coroutine_handle<> waiter;

    // One timer for whichever phase the connection is in (idle, head, body, write): when
    // the phase's deadline passes the connection's context is canceled and the connection
    // closes. Moving the deadline later, or dropping it, leaves the timer where it is: when
    // it fires early it goes back in for the deadline then in force, if any. So a keep-alive
    // connection's requests touch the timer heap about once per read-header timeout, not
    // two or three times each. (Its `when`, which arm() reads each turn, ends the third
    // line.)
    tether::detail::timer_node timer;
    // The peer's address once more when it is an IP one (at most a sockaddr_in6), in the
    // line after the three: each turn gives its request state the peer from here, reading
    // one line, not the three `remote` spans.
    std::uint16_t peer_len = 0; // 0: another family (the state copies `remote`)
    // The socket's slot in the loop's table of registered files once it has one (>= 0),
    // else -1 minus the SQEs issued on its fd so far (see use_fixed_file). In the peer's
    // line: the turn has read it before it submits anything.
    std::int16_t file_slot = -1;
    ::sockaddr_in6 peer;
    // The peer as the access log writes it, right after: a line reads the text from one line
    // more (its `std::string` took the string's line and its heap block's).
    conn_log log;

    join_handle<void> task; // its context is the connection's context
    // Bytes the multishot recv brought that `in` had no room for, in their pool buffers (see
    // recv_behind): made when first needed, freed once taken.
    std::unique_ptr<held_bytes> held;
    chunked_decoder dec;
    std::list<conn*>::iterator pos;
    net::address remote;

    std::string_view buffered() const noexcept { return {in.data() + in_start, in_end - in_start}; }
};

// (offsetof on a type that is not standard-layout is conditionally supported: GCC supports it.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static_assert(offsetof(conn, timer) + sizeof(time_point) == 192,
              "the timer's `when` ends a turn's three cache lines");
static_assert(offsetof(conn, peer_len) >= 192 && offsetof(conn, peer) + sizeof(conn::peer) <= 256,
              "the peer's copy is in one cache line");
static_assert(offsetof(conn, log) >= 192 && offsetof(conn, log) + sizeof(conn_log) <= 320,
              "the access log's text for the peer is in the peer's line and the next one");
#pragma GCC diagnostic pop

conn_log& log_of(conn* c) noexcept {
    return c->log;
}

namespace {
// The connection whose `sop` or `rop` a CQE names.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
conn* conn_of_send(tether::detail::completion* comp) noexcept {
    return reinterpret_cast<conn*>(reinterpret_cast<char*>(comp) - offsetof(conn, sop));
}
conn* conn_of_recv(tether::detail::completion* comp) noexcept {
    return reinterpret_cast<conn*>(reinterpret_cast<char*>(comp) - offsetof(conn, rop));
}
#pragma GCC diagnostic pop
} // namespace

namespace {
// Lines left at the thread's end are written then (none should be: every connection that
// gathered one writes it when it writes its responses, or ends).
struct thread_log_holder {
    log_lines log;
    ~thread_log_holder() { log.flush(); }
};
thread_local thread_log_holder thread_lines;
} // namespace

// Reached without the guard and __tls_get_addr that `thread_lines` itself takes for its
// destructor's registration.
[[gnu::tls_model("initial-exec")]] constinit thread_local log_lines* thread_lines_ptr = nullptr;

[[gnu::noinline]] log_lines& first_thread_log() noexcept {
    thread_lines_ptr = &thread_lines.log;
    return *thread_lines_ptr;
}

// A resettable one-shot signal made of a context: set() cancels it, waiters await its
// done(). (It keeps the server independent of the sync primitives.)
struct one_shot {
    context ctx;
    cancel_handle fire;
    explicit one_shot(bool set) {
        auto [c, h] = with_cancel(context{});
        ctx = std::move(c);
        fire = std::move(h);
        if (set) {
            fire.cancel();
        }
    }
    void reset() {
        if (ctx.is_done()) {
            auto [c, h] = with_cancel(context{});
            ctx = std::move(c);
            fire = std::move(h);
        }
    }
    void set() noexcept { fire.cancel(); }
    bool is_set() const noexcept { return ctx.is_done(); }
    // Waits until set; fails with the awaiting task's error if its context ends first.
    task<result<void>> wait() const {
        context c = ctx; // reset() may replace ctx while we wait
        co_return co_await c.done();
    }
};

// What one request needs while it is read and served: the parser, the request and its
// response, and the synchronous middleware's state. A connection holds one only while it has
// bytes of a request buffered or serves one; between requests it goes back to its server's
// spares. So the few in use at a time stay in cache, with what their vectors and buffers
// hold, however many connections there are: with a thousand keep-alive connections taking
// turns, each turn would otherwise find its connection's own copy of all this cold.
struct request_state {
    explicit request_state(const parser_limits& limits) noexcept : parser(limits) {}
    request req;
    response_writer w;
    request_parser parser;
    around_state around_st[max_around];
    std::exception_ptr error; // what the handler (or a step) threw, while the steps end
    request_state* next_spare = nullptr;
};

struct server_state {
    handler h;
    // The synchronous middleware `h` is made of, outermost first, and the handler inside
    // it (`h` itself when there is none): see serve_conn.
    const around_steps* around[max_around] = {};
    std::size_t around_count = 0;
    const handler* inner = nullptr;
    const serve_mux* mux = nullptr;     // the mux `inner` routes through, if it is a serve_mux's
    const sync_handler* sync = nullptr; // what `inner` calls, if it is from_sync's
    server_options opts;
    net::tcp_listener listener;
    std::list<conn*> conns;
    bool shutting_down = false;
    bool serving = false;
    cancel_handle accept_cancel;
    cancel_handle base_cancel;
    one_shot drained{true};
    one_shot slot_free{true};
    // Request states no connection holds, most recently given back first (the warmest).
    request_state* spare_states = nullptr;
    std::size_t spare_count = 0;
    // Output buffers no connection holds (see out_pool).
    out_pool out_bufs;
    // The pool of the loop the connections receive on (see recv_behind), once one has.
    net::detail::buffer_ring* ring = nullptr;
    loop* ring_loop = nullptr;
    // Input buffers (of in_first_size) no connection holds, the most recently given back
    // last: a connection receiving with the multishot recv gives its buffer back when it
    // waits with nothing buffered, and its next bytes go into a warm one (as out_pool).
    std::vector<char*> in_spares;
    server_recv_stats recv_counts;

    ~server_state() {
        assert(conns.empty());
        for (char* b : in_spares) {
            delete[] b;
        }
        while (request_state* s = spare_states) {
            spare_states = s->next_spare;
            delete s;
        }
    }

    // Returns a request state for `c`, its parser reset.
    request_state* take_state(conn* c);
    // Gives back a state taken by take_state: kept for the next request while there are
    // fewer spares than connections (never more states than a state per connection, as
    // when each connection kept its own), else freed.
    void give_state(request_state* s) noexcept;

    task<void> accept_loop(context base);
    task<void> serve_conn(conn* c);
    task<bool> read_more(conn* c);
    int settle_recv_now(conn* c);
    std::span<std::byte> read_room(conn* c);
    static bool read_done(conn* c, const result<std::size_t>& r) noexcept;
    task<result<void>> write_out(conn* c);
    task<void> linger(conn* c);
    void arm(conn* c, std::chrono::nanoseconds d);
    void disarm(conn* c);
    void drop_timer(conn* c); // takes the timer out of the heap (the connection is ending)
    void finish_response(conn* c, response_writer& w, bool keep_alive);
    // finish_response's two parts: most responses (see there), and the others.
    bool finish_plain(conn* c, response_writer& w, bool keep_alive);
    [[gnu::noinline]] void finish_other(conn* c, response_writer& w, bool keep_alive);
    // ok_status_and_date() as read at the start of the connection turn at hand (and again
    // after an await that may have taken long): the responses of a turn start with it, with
    // no clock read each. (It changes once a second, in place, at the same length.)
    std::string_view ok_start;
    void start_send(conn* c);
    task<void> settle_send(conn* c, const context& ctx);
};

void server_state::arm(conn* c, std::chrono::nanoseconds d) {
    if (d.count() <= 0) {
        disarm(c);
        return;
    }
    tether::detail::loop_impl& l = tether::loop::current()->impl();
    c->deadline = l.now() + d;
    if (c->timer_armed) {
        if (c->timer.when <= c->deadline) {
            return; // fires first, then goes back in for c->deadline
        }
        l.remove_timer(c->timer);
        c->timer_armed = false;
    }
    c->timer.when = c->deadline;
    c->timer.data = c;
    c->timer.fire = [](tether::detail::timer_node* t) noexcept {
        auto* cc = static_cast<conn*>(t->data);
        cc->timer_armed = false;
        if (cc->deadline == time_point::max()) {
            return; // disarmed since
        }
        tether::detail::loop_impl& loop = tether::loop::current()->impl();
        if (loop.now() < cc->deadline) {
            cc->timer.when = cc->deadline; // moved later since
            loop.add_timer(cc->timer);
            cc->timer_armed = true;
            return;
        }
        cc->deadline = time_point::max();
        cc->close_after = true;
        cc->task.cancel();
    };
    l.add_timer(c->timer);
    c->timer_armed = true;
}

void server_state::disarm(conn* c) {
    c->deadline = time_point::max(); // the timer, if in, finds nothing to do when it fires
}

request_state* server_state::take_state(conn* c) {
    request_state* s = spare_states;
    if (s != nullptr) {
        spare_states = s->next_spare;
        --spare_count;
        s->parser.reset();
    } else {
        s = new request_state(opts.limits);
    }
    // The peer as the request sees it: rebuilt from the connection's short copy when there is
    // one (what a request reads of the connection's cold lines), else copied whole.
    // (In place: from_sockaddr's result, cleared and copied whole on its way to `remote`,
    // took 95 instructions, 6% of an unpipelined request's at 1000 connections.)
    if (c->peer_len != 0 &&
        s->req.remote.assign_ip(reinterpret_cast<const ::sockaddr*>(&c->peer), c->peer_len)) {
        return s;
    }
    s->req.remote = c->remote;
    return s;
}

void server_state::give_state(request_state* s) noexcept {
    if (spare_count >= conns.size()) {
        delete s;
        return;
    }
    s->next_spare = spare_states;
    spare_states = s;
    ++spare_count;
}

void server_state::drop_timer(conn* c) {
    c->deadline = time_point::max();
    if (c->timer_armed) {
        tether::loop::current()->impl().remove_timer(c->timer);
        c->timer_armed = false;
    }
}

namespace {

// Points `sqe`, prepared with the connection's fd, at the fd's slot in the loop's table of
// registered files once it has one (IOSQE_FIXED_FILE): the kernel then takes no file
// reference (fget/fput) for the op. The fd is registered by the SQE that makes
// fixed_after_uses on it, a dozen or so keep-alive turns in: a client that makes a request or
// two per connection (Connection: close) never pays for the two io_uring_register calls. A
// full table or a refused registration leaves the plain fd, and the count starts again.
// (The connection's SQEs all go to the ring of the loop it was accepted on.)
inline void use_fixed_file(conn* c, io_uring_sqe* sqe) noexcept {
    if (c->file_slot < 0) {
        if (--c->file_slot > -1 - net::detail::fixed_after_uses ||
            !net::detail::register_fd(c->file_slot, tether::detail::tls_loop->impl().files(),
                                      c->sock.native_handle())) {
            return;
        }
    }
    sqe->fd = c->file_slot;
    sqe->flags |= IOSQE_FIXED_FILE;
}

// Empties the connection's slot, if it has one: before its fd closes, as the table's
// reference would keep the socket open (no FIN, no reset, for as long as the loop lives).
// Ops issued on the slot keep the file until they complete.
void release_fixed_file(conn* c) noexcept {
    net::detail::release_fd(c->file_slot, tether::detail::tls_loop->impl().files());
}

void submit_send(conn* c) noexcept {
    io_uring_sqe* sqe = tether::detail::tls_loop->impl().get_sqe();
    io_uring_prep_send(sqe, c->sock.native_handle(), c->out.data() + c->send_done,
                       c->send_size - c->send_done, MSG_NOSIGNAL);
    use_fixed_file(c, sqe);
    io_uring_sqe_set_data(sqe, &c->sop);
}

void send_complete(tether::detail::completion* comp, int res, std::uint32_t) noexcept {
    conn* c = conn_of_send(comp);
    if (res > 0) {
        c->send_done += static_cast<std::size_t>(res);
        if (c->send_done < c->send_size && !c->send_canceled) {
            submit_send(c); // the rest of a short send
            return;
        }
    }
    c->send_inflight = false;
    c->out.release();
    if (c->send_done < c->send_size) {
        c->send_failed = true;
    }
    if (!c->ending && (c->send_failed || (c->srv->shutting_down && c->idle))) {
        // A failed send ends the connection; a shutdown that found the connection busy
        // sending closes it once it is idle.
        c->close_after = true;
        c->task.cancel();
    }
    if (c->send_awaited) {
        c->send_awaited = false;
        tether::detail::tls_loop->impl().schedule(std::exchange(c->waiter, {}));
    }
}

using net::detail::buffer_ring;

// The size of a connection's input buffer until a long head or a body grows it.
constexpr std::size_t in_first_size = 4096;

[[gnu::noinline]] bool make_in(conn* c) noexcept {
    try {
        c->in.resize(in_first_size);
        return true;
    } catch (...) {
        return false;
    }
}

// Gives `c` an input buffer (it has none): a spare, the most recently given back, else a new
// one. False if none can be had (out of memory).
inline bool take_in(conn* c) noexcept {
    std::vector<char*>& spares = c->srv->in_spares;
    if (!spares.empty()) {
        c->in.p = spares.back();
        c->in.n = in_first_size;
        spares.pop_back();
        return true;
    }
    return make_in(c);
}

// Takes `c`'s input buffer (nothing in it, nothing held) into the spares, or frees it.
void give_in(conn* c) noexcept {
    server_state* s = c->srv;
    c->in_start = 0;
    c->in_end = 0;
    if (c->in.n == in_first_size && s->in_spares.size() < s->in_spares.capacity()) {
        s->in_spares.push_back(c->in.p); // (no allocation: see accept_loop)
    } else {
        delete[] c->in.p;
    }
    c->in.p = nullptr;
    c->in.n = 0;
}

// A plain recv into `in`'s room for the waiting task (see recv_behind).
void submit_plain(conn* c) noexcept;

void plain_complete(tether::detail::completion* comp, int res, std::uint32_t flags) noexcept {
    conn* c = conn_of_recv(comp);
    recv_behind& r = c->rop;
    r.plain = false;
    r.starved = false; // the pool again next time
    r.nonempty = (flags & IORING_CQE_F_SOCK_NONEMPTY) != 0;
    if (res > 0) {
        c->in_end += static_cast<std::size_t>(res);
    }
    r.res = res;
    r.waiting = false;
    // The last act: the task may run to its end and free the connection.
    tether::detail::tls_loop->impl().resume_completed(std::exchange(c->waiter, {}));
}

void submit_plain(conn* c) noexcept {
    recv_behind& r = c->rop;
    io_uring_sqe* sqe = tether::detail::tls_loop->impl().get_sqe();
    io_uring_prep_recv(sqe, c->sock.native_handle(), c->in.data() + c->in_end,
                       c->in.size() - c->in_end, 0);
    if (!r.nonempty && r.poll_first) {
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    }
    use_fixed_file(c, sqe);
    io_uring_sqe_set_data(sqe, &c->rop);
    r.complete = &plain_complete;
    r.plain = true;
    if (r.multishot) {
        ++c->srv->recv_counts.plain;
    }
}

void multishot_complete(tether::detail::completion* comp, int res, std::uint32_t flags) noexcept;

void arm_multishot(conn* c) noexcept {
    recv_behind& r = c->rop;
    io_uring_sqe* sqe = tether::detail::tls_loop->impl().get_sqe();
    io_uring_prep_recv_multishot(sqe, c->sock.native_handle(), nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = net::detail::buffer_group;
    use_fixed_file(c, sqe);
    io_uring_sqe_set_data(sqe, &c->rop);
    r.complete = &multishot_complete;
    r.armed = true;
    r.canceling = false;
    ++c->srv->recv_counts.arms;
}

// Submits the task's receive: the multishot recv, or a plain one where it can't be used.
void start_recv(conn* c) noexcept {
    if (c->rop.multishot && !c->rop.starved) {
        arm_multishot(c);
    } else {
        submit_plain(c);
    }
}

// Cancels the multishot recv in the kernel (its last CQE comes later), once.
void cancel_multishot(conn* c) noexcept {
    if (!c->rop.canceling) {
        c->rop.canceling = true;
        tether::detail::tls_loop->impl().cancel_in_kernel(&c->rop);
    }
}

// Takes `n` bytes in pool buffer `bid`: into `in`'s room as far as it goes (unless bytes are
// held already: they come first), the rest held in the buffer. (Not when the buffer can't be
// held, out of memory: the bytes are lost and the stream ends.)
[[gnu::noinline]] void take_or_hold(conn* c, std::uint16_t bid, std::size_t n) noexcept {
    recv_behind& r = c->rop;
    buffer_ring* ring = c->ring;
    std::byte* data = ring->buffer(bid);
    std::size_t off = 0;
    if (!r.holding) {
        if (c->in.empty()) {
            (void)take_in(c); // (else all of it is held)
        }
        off = std::min(n, c->in.size() - c->in_end);
        std::memcpy(c->in.data() + c->in_end, data, off);
        c->in_end += off;
    }
    if (off == n) {
        ring->recycle(bid);
        return;
    }
    try {
        if (c->held == nullptr) {
            c->held = std::make_unique<held_bytes>();
        }
        c->held->q.push_back(net::detail::recv_chunk{data, static_cast<std::uint32_t>(n),
                                                     static_cast<std::uint32_t>(off),
                                                     static_cast<std::int32_t>(bid)});
        r.holding = true;
    } catch (...) {
        ring->recycle(bid);
        r.ended = true;
        c->rop.end = -ENOMEM;
        if (r.armed) {
            cancel_multishot(c);
        }
    }
}

// Bytes the multishot recv added to `in`: resumes the task if it waits for them (true; the
// last act: the task may run on, and its end waits for the recv's last CQE), else marks them
// fresh for its next wait.
[[gnu::always_inline]] inline bool hand_over(conn* c, int res) noexcept {
    recv_behind& r = c->rop;
    if (r.waiting) {
        r.waiting = false;
        r.res = res;
        tether::detail::tls_loop->impl().resume_completed(std::exchange(c->waiter, {}));
        return true;
    }
    r.fresh = true;
    return false;
}

// Every CQE of the multishot recv but the common one (see multishot_complete).
[[gnu::noinline]] void multishot_other(conn* c, int res, std::uint32_t flags) noexcept {
    recv_behind& r = c->rop;
    if ((flags & IORING_CQE_F_MORE) == 0) {
        r.armed = false;
        r.canceling = false;
    }
    if (res > 0) {
        take_or_hold(c, static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT),
                     static_cast<std::size_t>(res));
        // (A waiting task holds nothing: some of the bytes went into `in`.)
        if (hand_over(c, res)) {
            return;
        }
        if (r.holding && r.armed && !r.canceling) {
            // `in` is full and the task is busy: stop receiving until it takes the bytes.
            ++c->srv->recv_counts.pauses;
            cancel_multishot(c);
        }
    } else if (res == -ENOBUFS) {
        r.starved = true; // the pool is dry: the next receive is a plain recv
        ++c->srv->recv_counts.nobufs;
    } else if (res == -EINVAL) {
        r.multishot = false; // a kernel without multishot recv: plain recvs from now on
    } else if (res != -ECANCELED) {
        r.ended = true; // EOF or an error: nothing more comes
        c->rop.end = static_cast<std::int16_t>(res);
    }
    if (r.armed) {
        return;
    }
    // The multishot recv is over.
    if (r.stopping) {
        r.stopping = false;
        tether::detail::tls_loop->impl().resume_completed(std::exchange(c->waiter, {}));
        return;
    }
    if (!r.waiting) {
        return; // the next wait re-arms it
    }
    if (r.starved && c->in.empty() && !take_in(c)) {
        r.ended = true;
        r.end = -ENOMEM;
    }
    if (r.ended || c->ctx_done) {
        r.waiting = false;
        r.res = r.ended ? c->rop.end : -ECANCELED;
        tether::detail::tls_loop->impl().resume_completed(std::exchange(c->waiter, {}));
        return;
    }
    start_recv(c); // a pause that ended as the task came to wait, or ENOBUFS
}

// Copies the `n` bytes at `q` to `p` in 64-byte blocks, without a call: up to `n` rounded up
// to 64 are read and written (the pool's buffers are 4 KiB; the caller has the room in `in`,
// whose bytes past in_end mean nothing).
[[gnu::always_inline]] inline void copy_blocks(char* p, const std::byte* q,
                                               std::size_t n) noexcept {
    using v16 = char __attribute__((vector_size(16)));
    for (std::size_t i = 0; i < n; i += 64) {
        v16 a;
        v16 b;
        v16 x;
        v16 y;
        std::memcpy(&a, q + i, 16);
        std::memcpy(&b, q + i + 16, 16);
        std::memcpy(&x, q + i + 32, 16);
        std::memcpy(&y, q + i + 48, 16);
        std::memcpy(p + i, &a, 16);
        std::memcpy(p + i + 16, &b, 16);
        std::memcpy(p + i + 32, &x, 16);
        std::memcpy(p + i + 48, &y, 16);
    }
}

// Bytes the common case copies in blocks (more: a call to memcpy, in take_or_hold).
constexpr std::size_t block_copy_max = 1024;

void multishot_complete(tether::detail::completion* comp, int res, std::uint32_t flags) noexcept {
    conn* c = conn_of_recv(comp);
    recv_behind& r = c->rop;
    // The common case: a few requests' bytes with room for them in `in` (in whole blocks),
    // the recv still armed, nothing held.
    const auto n = static_cast<std::size_t>(res);
    if (res > 0 && (flags & IORING_CQE_F_MORE) != 0 && !r.holding && n <= block_copy_max &&
        (!c->in.empty() || take_in(c)) && ((n + 63) & ~std::size_t{63}) <= c->in.size() - c->in_end)
        [[likely]] {
        buffer_ring* ring = c->ring;
        const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        copy_blocks(c->in.data() + c->in_end, ring->buffer(bid), n);
        c->in_end += n;
        ring->recycle(bid);
        hand_over(c, res);
        return;
    }
    multishot_other(c, res, flags);
}

// Moves held bytes into `in`'s room (read_room() made some) as far as it goes.
void drain_held(conn* c) noexcept {
    buffer_ring* ring = c->ring;
    held_bytes& h = *c->held;
    while (h.head < h.q.size() && c->in_end < c->in.size()) {
        net::detail::recv_chunk& k = h.q[h.head];
        const std::size_t n = std::min<std::size_t>(k.len - k.off, c->in.size() - c->in_end);
        std::memcpy(c->in.data() + c->in_end, k.data + k.off, n);
        c->in_end += n;
        k.off += static_cast<std::uint32_t>(n);
        if (k.off == k.len) {
            ring->recycle(static_cast<std::uint16_t>(k.bid));
            ++h.head;
        }
    }
    if (h.head == h.q.size()) {
        c->rop.holding = false;
        c->held.reset(); // rarely needed again soon
    }
}

// Gives back the pool buffers still held (the connection is ending).
void release_held(conn* c) noexcept {
    if (c->held != nullptr) {
        for (std::size_t i = c->held->head; i < c->held->q.size(); ++i) {
            c->ring->recycle(static_cast<std::uint16_t>(c->held->q[i].bid));
        }
        c->held.reset();
    }
    c->rop.holding = false;
}

// Waits for the connection's next bytes, which its receive adds to `in` after in_end (the
// caller made room with read_room()); the outcome is in c->rop.res. Under a done context
// nothing is submitted and the result is -ECANCELED.
struct recv_wait {
    conn* c;
    bool await_ready() const noexcept {
        if (c->ctx_done) {
            c->rop.res = -ECANCELED;
            return true;
        }
        recv_behind& r = c->rop;
        if (r.fresh || r.holding || r.ended) [[unlikely]] {
            // Bytes the multishot recv brought while the task was busy, or its end.
            if (r.holding) {
                drain_held(c);
            } else if (!r.fresh) {
                r.res = c->rop.end;
                return true;
            }
            r.fresh = false;
            r.res = 1;
            return true;
        }
        if (c->in.empty() && !r.armed && (r.starved || !r.multishot) && !take_in(c)) {
            r.res = -ENOMEM; // a plain recv needs a buffer
            return true;
        }
        return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        c->waiter = h;
        c->rop.waiting = true;
        if (!c->rop.armed) [[unlikely]] {
            start_recv(c); // (armed and canceling: a pause; its last CQE re-arms it)
        }
    }
    void await_resume() const noexcept {}
};

// Waits for the multishot recv's last CQE, canceling it (before the task reads otherwise).
struct recv_stop {
    conn* c;
    bool await_ready() const noexcept { return !c->rop.armed; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        cancel_multishot(c);
        c->rop.stopping = true;
        c->waiter = h;
    }
    void await_resume() const noexcept {}
};

// The connection's context is done: its recv, if one is in the kernel, is canceled there (a
// waiting task resumes with -ECANCELED); later reads fail at once. (Called once: the
// registration fires once.)
void conn_canceled(tether::detail::waiter* w) noexcept {
    conn* c = static_cast<conn*>(w->data);
    c->ctx_done = true;
    if (c->rop.armed) {
        cancel_multishot(c);
    } else if (c->rop.plain) {
        tether::detail::tls_loop->impl().cancel_in_kernel(&c->rop);
    }
}

// The registration behind conn_canceled: armed on the connection's context when the
// connection starts, disarmed when its task ends (or its frame goes).
struct conn_watch {
    tether::detail::waiter w;
    conn_watch(conn* c, const context& ctx) noexcept {
        w.lp = tether::detail::tls_loop;
        w.owner = nullptr; // a registration of its own, not the task's await chain
        w.data = c;
        w.on_cancel = &conn_canceled;
        if (!w.arm(ctx)) {
            c->ctx_done = true;
        }
    }
    conn_watch(const conn_watch&) = delete;
    conn_watch& operator=(const conn_watch&) = delete;
    ~conn_watch() { (void)w.finish_quietly({}); }
};

// Waits for the write-behind send to end (not cancelable: see settle_send).
struct send_wait {
    conn* c;
    bool await_ready() const noexcept { return !c->send_inflight; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        c->waiter = h;
        c->send_awaited = true;
    }
    void await_resume() const noexcept {}
};

} // namespace

// Starts sending what `out` holds without waiting for it (see send_behind).
void server_state::start_send(conn* c) {
    thread_log().flush(); // as write_out does
    if (c->out.empty()) {
        return;
    }
    c->send_size = c->out.size();
    c->send_done = 0;
    c->send_inflight = true;
    c->send_canceled = false;
    c->sop.complete = &send_complete;
    submit_send(c);
}

// Waits until no write-behind send is in flight. Under a done context (a timeout, a cancel)
// the send is canceled in the kernel first: a client that stopped reading must not hold the
// connection forever; otherwise the responses go out whole.
task<void> server_state::settle_send(conn* c, const context& ctx) {
    if (!c->send_inflight) {
        co_return;
    }
    if (ctx.is_done() && !c->send_canceled) {
        c->send_canceled = true;
        tether::detail::tls_loop->impl().cancel_in_kernel(&c->sop);
    }
    send_wait sw{c};
    co_await sw;
}

// Makes room after the buffered bytes and returns where the next read goes.
std::span<std::byte> server_state::read_room(conn* c) {
    if (c->in.empty() && !take_in(c)) {
        throw std::bad_alloc();
    }
    if (c->in_start > 0 && (c->in_start == c->in_end || c->in_start > c->in.size() / 2)) {
        std::memmove(c->in.data(), c->in.data() + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_end == c->in.size()) {
        std::size_t cap = opts.limits.max_header_bytes + 8192;
        if (c->in.size() >= cap) {
            c->in.resize(c->in.size() * 2); // a body chunk larger than the head limit
        } else {
            c->in.resize(std::min(cap, c->in.size() * 2));
        }
    }
    return std::as_writable_bytes(std::span(c->in.data() + c->in_end, c->in.size() - c->in_end));
}

// Takes the outcome of a read at read_room(); false on EOF, error or cancel.
bool server_state::read_done(conn* c, const result<std::size_t>& r) noexcept {
    if (!r) {
        c->read_eof = r.error() == net::io_errc::eof;
        return false;
    }
    c->in_end += *r;
    return true;
}

// Takes into `in` what the multishot recv brought and the task has not seen (the recv must be
// stopped): 1 if that is anything, -1 if it saw the stream end, else 0.
int server_state::settle_recv_now(conn* c) {
    recv_behind& r = c->rop;
    if (r.holding) {
        (void)read_room(c);
        drain_held(c);
        r.fresh = false;
        return 1;
    }
    if (r.fresh) {
        r.fresh = false;
        return 1;
    }
    if (r.ended) {
        c->read_eof = c->rop.end == 0;
        return -1;
    }
    return 0;
}

// Reads more bytes into the connection's buffer; false on EOF, error or cancel. (A read of
// the handler's, under the request's context: the multishot recv, if armed, is stopped first
// and what it brought taken, then a generic read waits.)
task<bool> server_state::read_more(conn* c) {
    if (c->rop.armed) {
        recv_stop stop{c};
        co_await stop;
    }
    if (const int got = settle_recv_now(c); got != 0) {
        co_return got > 0;
    }
    auto read = c->sock.read_some(read_room(c));
    result<std::size_t> r = co_await read;
    co_return read_done(c, r);
}

task<result<void>> server_state::write_out(conn* c) {
    // The access-log lines of the requests answered first (this connection's, and any other
    // gathered on this thread since the last write): one write for the turn's lines, and
    // none is lost if the connection ends with the write.
    thread_log().flush();
    if (c->send_inflight) {
        send_wait sw{c}; // a write-behind send goes first (the callers settle it before)
        co_await sw;
    }
    if (c->out.empty()) {
        co_return result<void>{};
    }
    auto [n, err] = co_await c->sock.write_all(c->out.view());
    c->out.release();
    if (err) {
        co_return err;
    }
    co_return result<void>{};
}

namespace {

// Writes `v` in decimal at `p`; returns the end.
[[gnu::always_inline]] inline char* put_decimal(char* p, std::uint64_t v) noexcept {
    return put_uint(p, v);
}

char* put(char* p, std::string_view s) noexcept {
    if (!s.empty()) { // an empty view may have no data (a map without fields)
        std::memcpy(p, s.data(), s.size());
    }
    return p + s.size();
}

// Copies a header map's wire() form to `p` and returns the end: "Name: value\r\n" each, in
// one piece; a few fields (up to 128 bytes) without a call.
[[gnu::always_inline]] inline char* put_fields(char* p, std::string_view fields) noexcept {
    if (fields.size() > 32 && fields.size() <= 64) {
        copy_ends<32>(p, fields.data(), fields.size());
        p += fields.size();
    } else if (fields.size() > 64 && fields.size() <= 128) {
        // The first and the last 64 bytes (overlapping), each as two 32-byte moves.
        const std::size_t n = fields.size();
        copy_ends<32>(p, fields.data(), 64);
        copy_ends<32>(p + n - 64, fields.data() + n - 64, 64);
        p += n;
    } else {
        p = put_short(p, fields);
    }
    return p;
}

// Appends a response head, then `body`. By hand rather than with fmt, sized once and written
// in place: it runs once per response and was the largest user-space cost of a small one.
// `ok_start` is ok_status_and_date() as the caller read it (see server_state::ok_start), or
// empty: read here.
[[gnu::always_inline]] inline void append_head(out_buffer& out, int status, const header_map& h,
                                               std::optional<std::uint64_t> len, bool chunked,
                                               bool close, std::string_view body = {},
                                               std::string_view ok_start = {}) {
    constexpr std::size_t http_date_size = 29; // "Sun, 06 Nov 1994 08:49:37 GMT"
    std::string_view reason = status == 200 ? std::string_view("OK") : status_text(status);
    const bool has_date = h.has("date");
    const bool has_length = h.has("content-length");
    const std::string_view fields = h.wire();
    // "HTTP/1.1 " status SP reason CRLF, Date, the fields, Transfer-Encoding or
    // Content-Length, Connection, CRLF: the fixed parts at their longest.
    const std::size_t need =
        9 + 20 + 1 + reason.size() + 2 + 64 + fields.size() + 30 + 20 + 21 + 2 + body.size();
    char* p = out.room(need);
    if (status == 200 && !has_date) {
        // Most of them: the status line and the Date field as made once a second, copied by
        // a few stores.
        const std::string_view start = ok_start.empty() ? ok_status_and_date() : ok_start;
        if (start.size() >= 32 && start.size() <= 64) {
            copy_ends<32>(p, start.data(), start.size());
            p += start.size();
        } else {
            p = put(p, start);
        }
    } else if (status == 200) {
        p = put(p, "HTTP/1.1 200 OK\r\n");
    } else {
        p = put(p, "HTTP/1.1 ");
        p = put_decimal(p, static_cast<std::uint64_t>(status));
        *p++ = ' ';
        p = put(p, reason);
        p = put(p, "\r\n");
    }
    if (!has_date && status != 200) {
        p = put(p, "Date: ");
        std::string_view date = http_date();
        if (date.size() == http_date_size) {
            std::memcpy(p, date.data(), http_date_size); // a constant size: no call
            p += http_date_size;
        } else {
            p = put(p, date);
        }
        p = put(p, "\r\n");
    }
    p = put_fields(p, fields);
    if (chunked) {
        p = put(p, "Transfer-Encoding: chunked\r\n");
    } else if (len && !has_length) {
        p = put(p, "Content-Length: ");
        p = put_decimal(p, *len);
        if (!close) {
            // Most heads end here: the field's CRLF and the empty line in one store.
            p = put(p, "\r\n\r\n");
            p = put_short(p, body);
            out.commit(p);
            return;
        }
        p = put(p, "\r\n");
    }
    if (close) {
        p = put(p, "Connection: close\r\n");
    }
    p = put(p, "\r\n");
    p = put_short(p, body);
    out.commit(p);
}

void error_response(out_buffer& out, int status, std::string_view why) {
    header_map h;
    h.set("Content-Type", "text/plain; charset=utf-8");
    std::string body = fmt::format("{} {}: {}\n", status, status_text(status), why);
    append_head(out, status, h, body.size(), false, true);
    out += body;
}

// A handler threw: 500, if nothing was sent yet.
void answer_failed(response_writer& w) {
    if (!w.head_sent_) {
        w.headers_.clear();
        w.body_.clear();
        w.status_ = 0;
        w.write_header(500);
        w.write("internal server error\n");
    }
}

// Cancels the request's context when the client hangs up while the handler runs.
task<void> watch_client(int fd, cancel_handle* cancel_req) {
    auto r = co_await tether::poll(fd, POLLRDHUP);
    if (r && (*r & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        cancel_req->cancel();
    }
}

// What run_handler needs should the handler suspend: the same for every request of a
// connection, so set up once (the awaiter, made per request, holds a pointer to it).
struct handler_env {
    int fd;
    cancel_handle* cancel_req;
    join_handle<void>* watch;
    bool suspended; // the handler of the request at hand suspended: `watch` runs
};

// Resumes the handler inline; if it suspends, `on_suspend` runs (arming the client-gone
// watch) and the awaiting task resumes when the handler completes. A handler that never
// suspends costs no watch at all.
struct run_handler {
    task<void>::handle_type h;
    const context* ctx;
    handler_env* env;
    bool await_ready() const noexcept { return false; }
    [[gnu::always_inline]] bool await_suspend(std::coroutine_handle<> parent) {
        h.promise().ctx_ = ctx;
        h.promise().continuation_ = nullptr;
        h.resume();
        if (h.done()) {
            return false;
        }
        h.promise().continuation_ = parent;
        *env->watch = tether::spawn(*ctx, watch_client(env->fd, env->cancel_req));
        env->suspended = true;
        return true;
    }
    void await_resume() {
        // take() is a call (GCC keeps it out of line): made only if the handler threw.
        if (h.promise().e_) [[unlikely]] {
            h.promise().take();
        }
    }
};

// Reads and drops the rest of `req`'s body (a coroutine of its own: its buffer is no part of
// every connection's frame).
task<void> drain_body(request& req) {
    char sink[4096];
    while (!req.conn_->body_done) {
        auto r = co_await req.read_body(std::span(sink));
        if (!r) {
            break;
        }
    }
}

} // namespace

// The response of a handler that set no status but 200 and wrote a body buffered whole, on
// a connection that stays open, with neither Date nor Content-Length among its fields (most
// responses): what append_head writes for it, without the tests of its other cases.
// Returns false, having done nothing, for any other response.
[[gnu::always_inline]] inline bool server_state::finish_plain(conn* c, response_writer& w,
                                                              bool keep_alive) {
    const header_map& named = w.headers_;
    const std::string_view start = ok_start;
    if (!keep_alive || shutting_down || c->close_after || !c->body_done || w.head_sent_ ||
        (w.status_ != 200 && w.status_ != 0) || w.head_request_ || w.http10_ ||
        start.size() - 32 > 32 // 32 to 64 bytes (always: a status line and a date)
        || named.has("date") || named.has("content-length") || named.has("connection")) {
        return false;
    }
    const std::string_view fields = named.wire();
    const std::string_view body = w.body_;
    // The status line and Date, the fields, Content-Length (20 digits at most), the empty
    // line, the body.
    char* p = c->out.room(64 + fields.size() + 16 + 20 + 4 + body.size());
    copy_ends<32>(p, start.data(), start.size());
    p = put_fields(p + start.size(), fields);
    std::memcpy(p, "Content-Length: ", 16);
    p = put_decimal(p + 16, body.size());
    std::memcpy(p, "\r\n\r\n", 4);
    p = put_short(p + 4, body);
    c->out.commit(p);
    w.head_sent_ = true;
    w.body_.clear();
    return true;
}

[[gnu::always_inline]] inline void server_state::finish_response(conn* c, response_writer& w,
                                                                 bool keep_alive) {
    if (!finish_plain(c, w, keep_alive)) {
        finish_other(c, w, keep_alive);
    }
}

void server_state::finish_other(conn* c, response_writer& w, bool keep_alive) {
    bool close = !keep_alive || shutting_down || c->close_after;
    if (!c->body_done) {
        close = true; // decided below whether to drain; a body left unread ends the connection
        c->linger = true;
    }
    close = close || w.says_close(); // the handler's own Connection: close (Go's rule too)
    if (!w.head_sent_) {
        const bool say_close = w.settle_connection_field(close);
        const int status = w.status();
        const bool no_body = status != 200 && status_has_no_body(status); // 200: one test
        append_head(c->out, status, w.headers_,
                    no_body ? std::nullopt : std::optional<std::uint64_t>(w.body_.size()), false,
                    say_close, w.head_request_ || no_body ? std::string_view{} : w.body_, ok_start);
        w.head_sent_ = true;
    } else if (w.chunked_) {
        if (!w.body_.empty() && !w.head_request_) {
            fmt::format_to(std::back_inserter(c->out), "{:x}\r\n", w.body_.size());
            c->out += w.body_;
            c->out += "\r\n";
        }
        c->out += "0\r\n\r\n";
    } else if (!w.head_request_) {
        c->out += w.body_;
    }
    w.body_.clear();
    if (close) {
        c->close_after = true;
    }
}

task<void> server_state::serve_conn(conn* c) {
    context conn_ctx = co_await this_coro::context;
    conn_watch watch_ctx(c, conn_ctx);
    if (!take_in(c)) {
        throw std::bad_alloc();
    }
    // The parser, request and response of the request at hand (see request_state): taken
    // when bytes of a request are buffered, given back while the connection waits with
    // none. (Should the frame go without reaching its end, the state goes with it.)
    std::unique_ptr<request_state> rs(take_state(c));
    // The request's context and its handle, kept for the next request when nobody but us
    // saw it (see below). It stays in the request state's `req.ctx_` while the connection
    // holds the state (from one request of a turn to the next: no moves); `req_ctx` holds
    // it while the state is back among the spares.
    context req_ctx;
    cancel_handle cancel_req;
    const tether::detail::node* req_node = nullptr;
    // The client-gone watch of a handler that suspended (run_handler).
    join_handle<void> watch;
    handler_env henv{c->sock.native_handle(), &cancel_req, &watch, false};
    // The access log's clock at the last read that brought bytes (0: no access log then):
    // the start of the requests they begin. One reading for the pipelined requests a read
    // brings, not one each.
    std::uint64_t read_mark = 0;
    std::size_t read_end = 0; // in_end once the task had taken in those bytes
    // What bounds a request from its head on (its body, its handler): the read timeout, or
    // the write timeout if there is none, or nothing. (The options don't change.)
    const std::chrono::nanoseconds request_timeout =
        opts.read_timeout.count() > 0 ? opts.read_timeout : opts.write_timeout;
    ok_start = ok_status_and_date();
    (void)c->sock.set_nodelay(true);
    // IORING_RECVSEND_POLL_FIRST came with COOP_TASKRUN (5.19); DEFER_TASKRUN is later still.
    // On a ring set up without either the kernel may refuse an unknown recv flag.
    if ((tether::detail::tls_loop->impl().flags() &
         (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN)) != 0) {
        c->rop.poll_first = true;
    }
    if (opts.multishot_recv) {
        loop* l = tether::detail::tls_loop;
        if (ring_loop == nullptr) {
            try {
                ring = &net::detail::loop_buffer_ring(l);
                ring_loop = l;
            } catch (const std::bad_alloc&) {
            }
        }
        c->rop.multishot = ring_loop == l && ring->registered;
        c->ring = ring;
    }

    while (!c->close_after) {
        // ---- the head ----
        if (rs == nullptr) {
            rs.reset(take_state(c));
        } else {
            rs->parser.reset();
        }
        request_parser::status st = request_parser::status::incomplete;
        bool first_byte_seen = c->in_end > c->in_start;
        c->idle = !first_byte_seen;
        // The request's start for the access log: the last read's, which brought the bytes
        // buffered, else (set below) the read that brings its first bytes.
        std::uint64_t arrived = read_mark;
        if (first_byte_seen && c->in_start >= read_end) [[unlikely]] {
            // Its first bytes came after that read's, while the task was busy (it waited for
            // a handler that suspended, or a send): from now, when the task takes them in.
            arrived = log_mark_if_logging();
        }
        bool header_timer_due = false;
        for (;;) {
            if (c->in_end > c->in_start) {
                c->rop.fresh = false; // the parser sees every byte received so far
                st = rs->parser.parse(c->buffered(), rs->req.head);
                if (st != request_parser::status::incomplete) {
                    break;
                }
            }
            if (header_timer_due) {
                header_timer_due = false;
                arm(c, opts.read_header_timeout);
            }
            // Responses queued by pipelined requests go out before we wait for more (a
            // write-behind send in flight holds all of them).
            if (!c->out.empty() && !c->send_inflight) {
                if (result<void> sent = co_await write_out(c); !sent) {
                    c->close_after = true;
                    break;
                }
            }
            if (c->in_end == c->in_start) {
                c->idle = true;
                if (shutting_down) {
                    c->close_after = true;
                    break;
                }
                arm(c, opts.idle_timeout);
                // Nothing of a request buffered: the state waits among the spares (its parser
                // has seen nothing since its reset), without the request context we keep.
                if (rs->req.ctx_.node() != nullptr) {
                    req_ctx = std::move(rs->req.ctx_);
                }
                give_state(rs.release());
                if (c->rop.multishot && !c->rop.starved && !c->rop.holding) {
                    give_in(c); // the next bytes take a warm one
                }
            } else if (!first_byte_seen) {
                first_byte_seen = true;
                c->idle = false;
                arm(c, opts.read_header_timeout);
            }
            // The connection's own receive (see recv_behind), after room in `in`: most turns
            // took every byte, and both ends go back to its start without a call.
            if (c->in_start == c->in_end && !c->rop.holding) {
                c->in_start = 0;
                c->in_end = 0;
            } else {
                (void)read_room(c);
            }
            recv_wait read{c};
            co_await read;
            ok_start = ok_status_and_date(); // a new turn
            bool more = c->rop.res > 0;
            if (more) {
                read_mark = log_mark_if_logging();
                read_end = c->in_end;
            } else {
                c->read_eof = c->rop.res == 0;
            }
            if (rs == nullptr) {
                rs.reset(take_state(c));
            }
            if (c->send_inflight) {
                // The responses sent behind go out whole before `out` takes more.
                task<void> settled = settle_send(c, conn_ctx);
                co_await std::move(settled);
            }
            if (!more) {
                c->close_after = true;
                // A client that shuts down its side in the middle of a head gets a 400, as
                // Go's server answers an unexpected EOF.
                if (c->read_eof && c->in_end > c->in_start) {
                    st = request_parser::status::error;
                    error_response(c->out, 400, "incomplete request");
                    c->linger = true;
                }
                break;
            }
            if (!first_byte_seen && c->in_end > c->in_start) {
                // The read-header timeout runs from here, armed only if the head is not
                // whole yet: a turn whose read brings whole requests reads no clock for it.
                first_byte_seen = true;
                c->idle = false;
                header_timer_due = true;
                arrived = read_mark;
            }
        }
        if (c->close_after && st != request_parser::status::complete) {
            break; // an incomplete head answered above, or a timeout, cancel or read error
        }
        if (conn_ctx.is_done()) {
            // Closed while idle (shutdown, idle timeout, the server's context) in the same
            // instant the read brought a request: its bytes were in flight, not yet a
            // request. Starting its handler under a done context would lose its response
            // (every write fails at once), so it is not started: the client sees a clean
            // close, as for a request still in the socket.
            c->close_after = true;
            break;
        }
        c->idle = false;
        request& req = rs->req;
        response_writer& w = rs->w;
        if (st == request_parser::status::error) {
            disarm(c);
            error_response(c->out, rs->parser.error().status, rs->parser.error().reason);
            c->close_after = true;
            c->linger = true;
            break;
        }
        c->in_start += rs->parser.consumed();
        disarm(c);
        if (request_timeout.count() > 0) {
            arm(c, request_timeout);
        }

        // ---- the body ----
        c->body_total = 0;
        c->body_error = false;
        if (!req.head.chunked && !req.head.content_length) [[likely]] {
            // Most requests: no body, nothing to test.
            c->body_chunked = false;
            c->body_left = 0;
            c->body_done = true;
            c->continue_pending = false;
        } else {
            c->body_chunked = req.head.chunked;
            c->body_left = req.head.chunked ? 0 : req.head.content_length.value_or(0);
            c->body_done = !req.head.chunked && c->body_left == 0;
            if (req.head.chunked) {
                c->dec = chunked_decoder{};
            }
            c->continue_pending = req.head.expect_continue && !c->body_done;
            if (req.head.content_length && *req.head.content_length > opts.max_body_bytes) {
                error_response(c->out, 413, "request body too large");
                c->close_after = true;
                c->linger = true;
                break;
            }
        }

        // ---- the handler, under a child of the connection's context ----
        if (!cancel_req) {
            auto [fresh, cancel] = with_cancel(conn_ctx);
            req.ctx_ = std::move(fresh);
            cancel_req = std::move(cancel);
            req_node = req.ctx_.node();
        } else if (req.ctx_.node() != req_node) {
            req.ctx_ = std::move(req_ctx); // the state was among the spares
        }
        req.conn_ = c;
        req.arrived_ = arrived;
        req.params.clear();
        w.reset(c, req.head.method == "HEAD", req.head.version_minor == 0);
        // Synchronous middleware (request ID, access log; none for a plain handler): its
        // steps run here, around the task of the handler it wraps, which runs under req.ctx_
        // as they left it.
        // Inline in this frame rather than in a function of their own, which took ~70
        // instructions per request (saving and restoring six registers twice) to make one
        // virtual call each way.
        std::size_t entered = 0; // the around steps whose `before` returned, outermost first
        bool failed = false;
        henv.suspended = false;
        try {
            bool answered = false;
            for (; entered < around_count; ++entered) {
                around_state& as = rs->around_st[entered];
                as.answered = false;
                around[entered]->before(req, w, as);
                if (as.answered) [[unlikely]] { // a step answered: no handler, no inner steps
                    ++entered;
                    answered = true;
                    break;
                }
            }
            // A synchronous handler (or a refusal of the mux's) runs here, with no frame: the
            // task is then empty.
            task<void> t;
            if (answered) [[unlikely]] {
            } else if (mux != nullptr) [[likely]] {
                t = mux->run_or_start(req, w);
            } else if (sync != nullptr) {
                (*sync)(req, w);
            } else {
                t = (*inner)(req, w);
            }
            if (t) {
                // A named awaiter: GCC 12 mishandles non-trivial temporaries in co_await.
                run_handler rh{t.handle(), &req.ctx_, &henv};
                co_await rh;
            }
        } catch (...) {
            failed = true;
            rs->error = std::current_exception();
        }
        // The `after` steps of those, innermost first: as failed when the handler (or a later
        // `before`, which kept the handler from running) threw, unless a step recovered.
        while (entered != 0) {
            --entered;
            try {
                if (failed && around[entered]->recover(req, w, rs->error)) [[unlikely]] {
                    failed = false;
                    rs->error = nullptr;
                }
                around[entered]->after(req, w, rs->around_st[entered], failed);
            } catch (...) {
                failed = true;
                rs->error = std::current_exception();
            }
        }
        if (failed) {
            // The recover middleware turns exceptions into 500s; without it, the connection
            // answers 500 if it still can, and closes.
            rs->error = nullptr;
            answer_failed(w);
            c->close_after = true;
        }
        if (henv.suspended) {
            watch = {}; // cancels the watch
            ok_start = ok_status_and_date();
        }
        // The handler has returned: its context ends (Go does the same). If nothing but
        // `req` and `cancel_req` refers to it and nothing is registered on it, ending it
        // would change nothing anyone can see: the next request reuses it, saving a node,
        // its link on the connection's context and the cancel.
        if (req.ctx_.node() != req_node || !tether::detail::cancel_unobserved(req.ctx_)) {
            cancel_req.reset();
            req.ctx_ = context{};
        }

        // A small unread body is drained so that the connection can carry the next request.
        if (!c->body_done && !c->body_error && c->body_total + c->body_left <= drain_limit) {
            task<void> drained_body = drain_body(req);
            co_await std::move(drained_body);
            ok_start = ok_status_and_date();
        }
        finish_response(c, w, req.head.keep_alive);
        disarm(c);
        // Batch: while complete requests are already buffered, answer them before writing.
        // With every byte read answered, the responses go out behind the next read (without
        // a write timeout: that one bounds a write the task waits for).
        if (!c->close_after && c->in_end == c->in_start && opts.write_timeout.count() == 0) {
            start_send(c);
        } else if (c->close_after || c->out.size() >= flush_threshold || c->in_end == c->in_start) {
            if (opts.write_timeout.count() > 0) {
                arm(c, opts.write_timeout);
            }
            if (result<void> sent = co_await write_out(c); !sent) {
                c->close_after = true;
            }
            disarm(c);
            ok_start = ok_status_and_date();
        }
    }
    c->ending = true;
    drop_timer(c);
    if (c->rop.armed) {
        recv_stop stop{c};
        co_await stop;
    }
    release_held(c);
    if (c->send_inflight) {
        task<void> settled = settle_send(c, conn_ctx);
        co_await std::move(settled);
    }
    if (!c->out.empty()) {
        // An error answer is bounded by the write timeout, or by a second; the rest by the
        // connection's context.
        if (c->linger) {
            auto d = opts.write_timeout.count() > 0 ? opts.write_timeout
                                                    : std::chrono::nanoseconds(linger_time);
            task<result<void>> send = tether::with_timeout(d, write_out(c));
            (void)co_await std::move(send);
        } else {
            (void)co_await with_context(without_cancel(conn_ctx), write_out(c));
        }
    }
    (void)c->sock.shutdown(net::shutdown_how::write);
    if (c->linger) {
        co_await linger(c);
    }
    release_fixed_file(c);
    (void)c->sock.close();
    thread_log().flush(); // lines of requests whose answers were never written
    if (rs != nullptr) {
        rs->req.ctx_ = context{}; // the spares hold no request's context
        give_state(rs.release());
    }
    conns.erase(c->pos);
    c->out.release();
    out_bufs.limit = conns.size();
    while (out_bufs.spares.size() > out_bufs.limit) {
        delete[] out_bufs.spares.back().data;
        out_bufs.spares.pop_back();
    }
    while (in_spares.size() > conns.size()) {
        delete[] in_spares.back();
        in_spares.pop_back();
    }
    slot_free.set();
    if (conns.empty()) {
        drained.set();
    }
    (void)watch_ctx.w.finish_quietly({}); // nothing refers to `c` afterwards
    delete c;
}

// After an error answer, reads and drops what the client still sends (the rest of a body it
// had started), until it closes its side, for at most a second or `linger_bytes`: closing a
// socket with unread bytes sends a reset, and the client might lose the answer with it.
task<void> server_state::linger(conn* c) {
    char sink[4096];
    std::size_t total = 0;
    context parent = co_await this_coro::context;
    auto [ctx, cancel] = tether::with_timeout(parent, linger_time);
    while (total < linger_bytes) {
        auto read = c->sock.read_some(std::as_writable_bytes(std::span(sink)));
        auto r = co_await with_context(ctx, std::move(read));
        if (!r) {
            break;
        }
        total += *r;
    }
}

task<void> server_state::accept_loop(context base) {
    for (;;) {
        if (opts.max_connections != 0 && conns.size() >= opts.max_connections) {
            slot_free.reset();
            if (auto r = co_await slot_free.wait(); !r) {
                co_return;
            }
            continue;
        }
        auto r = co_await listener.accept();
        if (!r) {
            context self = co_await this_coro::context;
            if (self.is_done() || r.error() == net::io_errc::closed) {
                co_return;
            }
            continue; // EMFILE and the like: the listener backs off by itself
        }
        auto* c = new conn;
        c->srv = this;
        c->sock = std::move(*r);
        c->remote = c->sock.peer_addr().value_or(net::address{});
        if (const int fam = c->remote.native_family();
            (fam == AF_INET || fam == AF_INET6) && c->remote.size() <= sizeof(c->peer)) {
            std::memcpy(&c->peer, c->remote.data(), c->remote.size());
            c->peer_len = static_cast<std::uint16_t>(c->remote.size());
        }
        context cctx = opts.conn_context ? opts.conn_context(base, c->remote) : base;
        c->out.pool = &out_bufs;
        conns.push_back(c);
        c->pos = std::prev(conns.end());
        out_bufs.limit = conns.size();
        if (in_spares.capacity() < conns.size()) {
            // Room for a spare input buffer per connection, made here: give_in() never
            // allocates.
            in_spares.reserve(std::max<std::size_t>(64, 2 * conns.size()));
        }
        drained.reset();
        c->task = tether::spawn(cctx, serve_conn(c));
    }
}

} // namespace detail

// ---- request / response_writer ------------------------------------------------------------

namespace {

// Copies the request's head out of the connection's buffer into the request and points its
// views there, if they still point into the buffer: reading more of a chunked body moves
// and grows that buffer, and the views stay valid until the handler completes.
void keep_head(request& req, const detail::conn* c) {
    const char* const b = c->in.data();
    const char* const e = b + c->in.size();
    auto inside = [b, e](std::string_view v) { return v.data() >= b && v.data() < e; };
    request_head& h = req.head;
    if (!inside(h.method)) {
        return; // copied already (or never in the buffer)
    }
    const char* lo = h.method.data();
    const char* hi = h.method.data() + h.method.size();
    auto widen = [&](std::string_view v) {
        if (!v.empty() && inside(v)) {
            lo = std::min(lo, v.data());
            hi = std::max(hi, v.data() + v.size());
        }
    };
    widen(h.target);
    for (const header_field& f : h.headers) {
        widen(f.name);
        widen(f.value);
    }
    req.head_copy_.assign(lo, static_cast<std::size_t>(hi - lo));
    const char* const to = req.head_copy_.data();
    auto move = [&](std::string_view& v) {
        if (!v.empty() && inside(v)) {
            v = std::string_view(to + (v.data() - lo), v.size());
        }
    };
    move(h.method);
    move(h.target);
    for (header_field& f : h.headers) {
        move(f.name);
        move(f.value);
    }
}

} // namespace

task<result<std::size_t>> request::read_body(std::span<char> buf) {
    detail::conn* c = conn_;
    if (c == nullptr || c->body_done || buf.empty()) {
        co_return std::size_t{0};
    }
    if (c->body_error) {
        co_return make_error_code(std::errc::bad_message);
    }
    if (c->continue_pending) {
        c->continue_pending = false;
        auto [n, err] =
            co_await c->sock.write_all(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
        if (err) {
            co_return err;
        }
    }
    const std::uint64_t max = c->srv->opts.max_body_bytes;
    for (;;) {
        if (!c->body_chunked) {
            std::size_t avail = c->in_end - c->in_start;
            if (avail > 0) {
                std::size_t n = static_cast<std::size_t>(
                    std::min<std::uint64_t>({c->body_left, avail, buf.size()}));
                std::memcpy(buf.data(), c->in.data() + c->in_start, n);
                c->in_start += n;
                c->body_left -= n;
                c->body_total += n;
                c->body_done = c->body_left == 0;
                co_return n;
            }
            if (c->rop.armed || c->rop.fresh || c->rop.holding || c->rop.ended) {
                // What the multishot recv brought comes first (see read_more).
                if (c->rop.armed) {
                    detail::recv_stop stop{c};
                    co_await stop;
                }
                if (c->rop.holding) {
                    keep_head(*this, c); // taking held bytes may move the buffer
                }
                if (const int got = c->srv->settle_recv_now(c); got > 0) {
                    continue;
                } else if (got < 0) {
                    c->body_error = true;
                    c->close_after = true;
                    co_return c->read_eof ? std::error_code(net::io_errc::eof)
                                          : std::error_code(-c->rop.end, std::system_category());
                }
            }
            // Straight into the caller's buffer: no copy for large bodies.
            std::size_t want =
                static_cast<std::size_t>(std::min<std::uint64_t>(c->body_left, buf.size()));
            auto r = co_await c->sock.read_some(std::as_writable_bytes(buf.first(want)));
            if (!r) {
                c->body_error = true;
                c->close_after = true;
                co_return r.error();
            }
            c->body_left -= *r;
            c->body_total += *r;
            c->body_done = c->body_left == 0;
            co_return *r;
        }
        // Chunked: decode in place in the connection buffer, then copy out. The window is no
        // larger than `buf`, so every decoded byte fits: nothing is left over between calls.
        while (c->in_end > c->in_start) {
            std::size_t used = 0;
            std::size_t produced = 0;
            std::size_t window = std::min(c->in_end - c->in_start, buf.size());
            auto st = c->dec.decode(c->in.data() + c->in_start, window, used, produced);
            if (st == chunked_decoder::status::error) {
                c->body_error = true;
                c->close_after = true;
                co_return make_error_code(std::errc::bad_message);
            }
            std::memcpy(buf.data(), c->in.data() + c->in_start, produced);
            c->in_start += used;
            c->body_total += produced;
            if (c->body_total > max) {
                c->body_error = true;
                c->close_after = true;
                co_return make_error_code(std::errc::message_size);
            }
            if (st == chunked_decoder::status::done) {
                c->body_done = true;
            }
            if (produced > 0 || c->body_done) {
                co_return produced;
            }
        }
        keep_head(*this, c);
        if (bool more = co_await c->srv->read_more(c); !more) {
            c->body_error = true;
            c->close_after = true;
            co_return make_error_code(net::io_errc::eof);
        }
    }
}

task<result<std::string>> request::read_all() {
    std::string body;
    char chunk[16384];
    for (;;) {
        auto r = co_await read_body(std::span(chunk));
        if (!r) {
            co_return r.error();
        }
        if (*r == 0) {
            co_return body;
        }
        body.append(chunk, *r);
    }
}

bool response_writer::says_close() const noexcept {
    const std::optional<std::string_view> own = headers_.get("connection");
    return own && has_token(*own, "close");
}

bool response_writer::settle_connection_field(bool close) {
    const std::optional<std::string_view> own = headers_.get("connection");
    if (!own) {
        if (http10_ && !close) {
            // HTTP/1.0 keeps a connection only when the response says so (RFC 9112 §C.2.2).
            headers_.set("Connection", "keep-alive");
        }
        return close;
    }
    if (has_token(*own, "close")) {
        return false; // the handler's field says it
    }
    if (close) {
        headers_.remove("connection"); // it would say otherwise: "close" replaces it
        return true;
    }
    return false;
}

void response_writer::reset(detail::conn* c, bool head_request, bool http10) noexcept {
    conn_ = c;
    headers_.clear();
    body_.clear();
    status_ = 0;
    head_sent_ = false;
    chunked_ = false;
    head_request_ = head_request;
    http10_ = http10;
    body_bytes_ = 0;
}

void detail::byte_buffer::grow(std::size_t n, std::size_t min_cap) {
    const std::size_t want = std::max({size_ + n, 2 * cap_, min_cap});
    char* bigger = new char[want];
    if (size_ != 0) {
        std::memcpy(bigger, data_, size_);
    }
    delete[] data_;
    data_ = bigger;
    cap_ = want;
}

task<result<void>> response_writer::flush() {
    detail::conn* c = conn_;
    write_header(200);
    if (!head_sent_) {
        auto len = headers_.get("content-length");
        // HTTP/1.0 has no chunked coding: a streamed response to it ends the connection
        // (a body without a length runs to the close).
        chunked_ = !len && !status_has_no_body(status_) && !http10_;
        if (http10_) {
            c->close_after = true;
        }
        detail::append_head(c->out, status_, headers_, std::nullopt, chunked_,
                            settle_connection_field(http10_));
        head_sent_ = true;
    }
    if (!body_.empty() && !head_request_) {
        if (chunked_) {
            fmt::format_to(std::back_inserter(c->out), "{:x}\r\n", body_.size());
            c->out += body_;
            c->out += "\r\n";
        } else {
            c->out += body_;
        }
    }
    body_.clear();
    co_return co_await c->srv->write_out(c);
}

// ---- chain / serve_mux ---------------------------------------------------------------------

handler chain(handler h, std::initializer_list<middleware> mws) {
    for (auto it = std::rbegin(mws); it != std::rend(mws); ++it) {
        h = (*it)(std::move(h));
    }
    return h;
}

namespace {
// `h` as a synchronous handler, when it is one: from_sync's, or synchronous steps around
// one (bearer_auth() around a route's from_sync). Else empty.
sync_handler as_sync(const handler& h) {
    if (const auto* a = h.target<detail::sync_adapter>()) {
        return a->f;
    }
    if (const auto* a = h.target<detail::around_handler>(); a != nullptr && a->steps) {
        if (sync_handler inner = as_sync(a->next)) {
            return detail::around_sync{a->steps, std::move(inner)};
        }
    }
    return {};
}
} // namespace

void serve_mux::handle(std::string_view pattern, handler h) {
    if (sync_handler s = as_sync(h)) {
        // from_sync's, with any synchronous steps around it: called directly.
        const auto* sf = s.target<route_handler::sync_function>();
        handle_sync(pattern, sf != nullptr ? *sf : nullptr, sf != nullptr ? nullptr : std::move(s));
        return;
    }
    routes_.add(pattern);
    const auto* f = h.target<route_handler::function>();
    handlers_.push_back(route_handler{std::move(h), f != nullptr ? *f : nullptr, {}, nullptr});
}

void serve_mux::handle_sync(std::string_view pattern, route_handler::sync_function sf,
                            sync_handler s) {
    if (sf == nullptr && !s) {
        throw std::invalid_argument("http: serve_mux::handle: empty handler");
    }
    routes_.add(pattern);
    handlers_.push_back(route_handler{{}, nullptr, std::move(s), sf});
}

task<void> serve_mux::route_handler::sync_task(request& req, response_writer& w) const {
    call_sync(req, w);
    co_return;
}

namespace {

// Answers a request no pattern took: 404, 405 with the Allow list, or 301 to the path with a
// slash appended (the query kept), as Go's ServeMux.
void refuse(const route_match& m, const request& req, response_writer& w) {
    w.headers().set("Content-Type", "text/plain; charset=utf-8");
    if (m.result == route_match::kind::redirect) {
        std::string to = m.location;
        if (std::string_view q = req.query(); !q.empty()) {
            to += '?';
            to += q;
        }
        w.headers().set("Location", to);
        w.write_header(301);
        w.write("301 moved permanently\n");
    } else if (m.result == route_match::kind::method_not_allowed) {
        w.headers().set("Allow", m.allow);
        w.write_header(405);
        w.write("405 method not allowed\n");
    } else {
        w.write_header(404);
        w.write("404 page not found\n");
    }
}

task<void> refused(route_match m, const request& req, response_writer& w) {
    refuse(m, req, w);
    co_return;
}

} // namespace

task<void> serve_mux::serve(request& req, response_writer& w) const {
    task<void> t = handler_task(req, w);
    co_await std::move(t);
}

task<void> serve_mux::matched_task(request& req, response_writer& w) const {
    route_match m = routes_.match(req.method(), req.path(), req.params);
    if (m.result == route_match::kind::found) {
        return handlers_[m.index].start(req, w);
    }
    return refused(std::move(m), req, w);
}

task<void> serve_mux::matched_run_or_start(request& req, response_writer& w) const {
    route_match m = routes_.match(req.method(), req.path(), req.params);
    if (m.result == route_match::kind::found) {
        const route_handler& r = handlers_[m.index];
        if (r.is_sync()) {
            r.call_sync(req, w);
            return {};
        }
        return r.start(req, w);
    }
    refuse(m, req, w);
    return {};
}

// Not a coroutine: the matched handler's own task is the one the server runs, with no frame
// of the mux's around it.
task<void> detail::mux_handler::operator()(request& req, response_writer& w) const {
    return mux->handler_task(req, w);
}

handler serve_mux::as_handler() const {
    return detail::mux_handler{this};
}

task<void> detail::sync_adapter::operator()(request& req, response_writer& w) const {
    f(req, w);
    co_return;
}

handler from_sync(sync_handler f) {
    if (!f) {
        return {};
    }
    return detail::sync_adapter{std::move(f)};
}

// ---- server ---------------------------------------------------------------------------------

server::server(handler h, server_options opts) : s_(std::make_shared<detail::server_state>()) {
    s_->h = std::move(h);
    s_->opts = std::move(opts);
    // Synchronous middleware runs in serve_conn's frame (see there).
    const handler* inner = &s_->h;
    while (s_->around_count < detail::max_around) {
        const auto* a = inner->target<detail::around_handler>();
        if (a == nullptr || !a->steps) {
            break;
        }
        s_->around[s_->around_count++] = a->steps.get();
        inner = &a->next;
    }
    s_->inner = inner;
    // A serve_mux's: routed in serve_conn's frame, with no call of its own. A synchronous
    // handler's: called there.
    if (const auto* m = inner->target<detail::mux_handler>()) {
        s_->mux = m->mux;
    } else if (const auto* a = inner->target<detail::sync_adapter>(); a != nullptr && a->f) {
        s_->sync = &a->f;
    }
}

server::~server() = default;

result<void> server::listen(const net::address& at) {
    auto l = net::tcp_listener::bind(at);
    if (!l) {
        return l.error();
    }
    s_->listener = std::move(*l);
    return {};
}

void server::listen(net::tcp_listener l) {
    s_->listener = std::move(l);
}

result<net::address> server::local_addr() const {
    return s_->listener.local_addr();
}

std::size_t server::active_connections() const noexcept {
    return s_->conns.size();
}

server_recv_stats server::receive_stats() const noexcept {
    server_recv_stats st = s_->recv_counts;
    st.spare_inputs = s_->in_spares.size();
    return st;
}

task<result<void>> server::serve() {
    std::shared_ptr<detail::server_state> s = s_;
    context serve_ctx = co_await this_coro::context;
    context base = s->opts.base_context ? s->opts.base_context(serve_ctx) : serve_ctx;
    auto [base_ctx, base_cancel] = with_cancel(base);
    auto [accept_ctx, accept_cancel] = with_cancel(base_ctx);
    s->base_cancel = std::move(base_cancel);
    s->accept_cancel = std::move(accept_cancel);
    s->serving = true;
    co_await with_context(accept_ctx, s->accept_loop(base_ctx));
    s->listener.close();
    // Connections still running: wait for them (shutdown() drives them to an end; if our
    // own context ended, base_ctx did too and they are finishing).
    while (!s->conns.empty()) {
        (void)co_await with_context(without_cancel(serve_ctx), s->drained.wait());
    }
    s->serving = false;
    if (std::error_code e = serve_ctx.err()) {
        co_return e;
    }
    co_return result<void>{};
}

task<result<void>> server::shutdown() {
    std::shared_ptr<detail::server_state> s = s_;
    context ctx = co_await this_coro::context;
    s->shutting_down = true;
    s->accept_cancel.cancel();
    s->listener.close();
    for (detail::conn* c : s->conns) {
        if (c->idle && !c->send_inflight) { // else closed when the send ends
            c->close_after = true;
            c->task.cancel();
        }
    }
    result<void> r;
    while (!s->conns.empty()) {
        auto w = co_await s->drained.wait();
        if (!w) {
            r = w.error();
            // Out of time: cancel every request and wait for them to end.
            s->base_cancel.cancel();
            while (!s->conns.empty()) {
                (void)co_await with_context(without_cancel(ctx), s->drained.wait());
            }
        }
    }
    co_return r;
}

} // namespace tether::http
