#include "context/context.hpp"

#include "context/after_func.hpp"
#include "context/format.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace tether {

// ---- errc ------------------------------------------------------------------------------

namespace {

class category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tether"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
        case errc::canceled:
            return "context canceled";
        case errc::deadline_exceeded:
            return "context deadline exceeded";
        }
        return "unknown tether error";
    }
    std::error_condition default_error_condition(int ev) const noexcept override {
        if (static_cast<errc>(ev) == errc::canceled) {
            return std::errc::operation_canceled;
        }
        if (static_cast<errc>(ev) == errc::deadline_exceeded) {
            return std::errc::timed_out;
        }
        return {ev, *this};
    }
};

// Constant-initialized, so make_error_code() checks no guard on every call.
constinit const category_impl the_category;

} // namespace

const std::error_category& tether_category() noexcept {
    return the_category;
}

std::string_view to_string(errc e) noexcept {
    switch (e) {
    case errc::canceled:
        return "context canceled";
    case errc::deadline_exceeded:
        return "context deadline exceeded";
    }
    return "unknown tether error";
}

// ---- deferred work -----------------------------------------------------------------------
//
// after_func functions started by a cancel are queued on the canceling thread and posted once
// the outermost cancel on that thread has finished propagating, so that a function sees the
// whole subtree canceled. They are posted to the executor that registered them, or to
// real_executor()'s thread: never run on the canceling thread, where the caller of cancel()
// may hold a lock the function takes, or may not have finished its own cancel() call.

namespace detail {
struct after_func_state;
}

namespace {

// Trivially destructible, so that threads that never exit (the real clock's) leave no
// exit-time destructor registered.
struct deferred_queue {
    int depth = 0;
    detail::after_func_state* head = nullptr; // started after_funcs, linked through `next`
    detail::after_func_state* tail = nullptr;
};
[[gnu::tls_model("initial-exec")]] constinit thread_local deferred_queue tls_deferred;

void post_deferred() noexcept; // with after_func below

struct deferred_scope {
    deferred_scope() noexcept { ++tls_deferred.depth; }
    deferred_scope(const deferred_scope&) = delete;
    deferred_scope& operator=(const deferred_scope&) = delete;
    ~deferred_scope() {
        if (--tls_deferred.depth == 0 && tls_deferred.head != nullptr) {
            post_deferred();
        }
    }
};

} // namespace

// ---- node memory -----------------------------------------------------------------------
//
// Contexts are made and dropped at a high rate (a child per request, per call with a
// timeout), so each thread keeps the blocks of the last nodes it freed, one list per size
// class of 16 bytes, and reuses them before asking malloc: a hit is a pointer pop, where
// glibc's malloc and free cost about a hundred instructions each, and more past its
// per-thread cache of 7 blocks. A node may be freed on another thread than the one that made
// it: the block then joins the freeing thread's list, which is fine, since a block is just
// memory of the right size (the node's reference count has already ordered every access to
// it before the free). Blocks are allocated at their class's size, a multiple of 16 as
// malloc's chunks are, so a live node costs about what `new` would.
//
// Under AddressSanitizer every node goes back to malloc, so that a use after free is still
// caught.

namespace {

constexpr std::size_t node_class_size = 16;
constexpr std::size_t node_classes = 17; // blocks up to 264 bytes; larger ones skip the cache

struct free_block {
    free_block* next;
};

// Trivially destructible (see deferred_queue): it stays usable while the thread's other
// thread-locals are destroyed, after the reaper below has emptied it.
struct node_cache {
    enum : std::uint8_t { unarmed, armed, reaped };
    free_block* head[node_classes];
    std::uint32_t count[node_classes];
    // unarmed until the thread's first free registers the reaper; reaped once the thread is
    // exiting and the reaper has run: then blocks go straight back to malloc.
    std::uint8_t mode;
};
// initial-exec: libtether is linked, not dlopen'ed, so its TLS block is static and a node
// made or freed reads the cache at a fixed offset from the thread pointer, where the
// default model of a shared library calls __tls_get_addr each time (55 of ~380 instructions
// of a with_cancel and its cancel, by callgrind).
[[gnu::tls_model("initial-exec")]] constinit thread_local node_cache tls_node_cache{};

std::atomic<std::size_t> reaped_blocks{0};

// Gives the cached blocks back to malloc when a thread that cached any exits. Touched once per
// thread, on its first free (`mode`): a thread_local with a destructor is reached through
// __tls_get_addr and a guard, two calls per access.
struct node_cache_reaper {
    bool armed = false;
    node_cache_reaper() = default;
    node_cache_reaper(const node_cache_reaper&) = delete;
    node_cache_reaper& operator=(const node_cache_reaper&) = delete;
    ~node_cache_reaper() {
        node_cache& c = tls_node_cache;
        c.mode = node_cache::reaped;
        std::size_t freed = 0;
        for (std::size_t k = 0; k < node_classes; ++k) {
            while (free_block* b = c.head[k]) {
                c.head[k] = b->next;
                ::operator delete(b);
                ++freed;
            }
            c.count[k] = 0;
        }
        reaped_blocks.fetch_add(freed, std::memory_order_relaxed);
    }
};
thread_local node_cache_reaper tls_node_cache_reaper;

// At most this many blocks per size class per thread (66 KiB of the 264-byte class).
constexpr std::uint32_t node_cache_cap = 256;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool node_cache_enabled = false;
#else
constexpr bool node_cache_enabled = true;
#endif

// The class of a block of `size` bytes: blocks of class k are 16k + 8 bytes, which with
// malloc's 8-byte header fill a 16-byte-aligned chunk exactly (a 168-byte cancel state takes
// a 176-byte chunk, not the 192 a 176-byte block would); a class of node_classes or more is
// not cached.
constexpr std::size_t node_block_size(std::size_t k) noexcept {
    return k * node_class_size + 8;
}
constexpr std::size_t node_class_of(std::size_t size) noexcept {
    return (size + node_class_size - 9) / node_class_size;
}
static_assert(node_block_size(node_class_of(168)) == 168 && node_class_of(169) == 11 &&
              node_class_of(64) == 4 && node_block_size(4) >= 64);

inline void* alloc_block(std::size_t k, std::size_t size) {
    if constexpr (node_cache_enabled) {
        if (k < node_classes) {
            node_cache& c = tls_node_cache;
            if (free_block* b = c.head[k]) {
                c.head[k] = b->next;
                --c.count[k];
                return b;
            }
            return ::operator new(node_block_size(k));
        }
    }
    return ::operator new(size);
}

// The first free of a thread (arms the reaper, then caches the block), or one the cache
// can't take.
[[gnu::noinline]] void free_block_slow(void* p, std::size_t k) noexcept {
    node_cache& c = tls_node_cache;
    if (c.mode == node_cache::unarmed) {
        c.mode = node_cache::armed;
        tls_node_cache_reaper.armed = true; // registers its destructor on first use
        if (k < node_classes && c.count[k] < node_cache_cap) {
            auto* b = static_cast<free_block*>(p);
            b->next = c.head[k];
            c.head[k] = b;
            ++c.count[k];
            return;
        }
    }
    ::operator delete(p);
}

inline void free_to_cache(void* p, std::size_t k) noexcept {
    if constexpr (node_cache_enabled) {
        node_cache& c = tls_node_cache;
        if (k < node_classes && c.count[k] < node_cache_cap && c.mode == node_cache::armed)
            [[likely]] {
            auto* b = static_cast<free_block*>(p);
            b->next = c.head[k];
            c.head[k] = b;
            ++c.count[k];
            return;
        }
        free_block_slow(p, k);
    } else {
        ::operator delete(p);
    }
}

// Makes a T (default-initialized, as `new T` would) in a cached block. Inside this file,
// nodes are made and freed through these rather than through node's operator new and
// delete, which call the exported allocate_node() and deallocate_node() through the PLT.
// Every with_cancel pays for a cancel state, and every spawned task for one with the spawn's
// fields after it (runtime/spawn.hpp): keep it in the 136-byte block.
static_assert(node_block_size(node_class_of(sizeof(detail::cancel_state))) == 136);

template <class T>
T* new_node() {
    static_assert(sizeof(T) >= sizeof(free_block) && alignof(T) <= alignof(std::max_align_t));
    return ::new (alloc_block(node_class_of(sizeof(T)), sizeof(T))) T;
}

template <class T>
void delete_node(T* n) noexcept {
    n->~T();
    free_to_cache(n, node_class_of(sizeof(T)));
}

} // namespace

namespace detail {

std::uint32_t thread_tag() noexcept {
    static std::atomic<std::uint32_t> next{0};
    [[gnu::tls_model("initial-exec")]] static constinit thread_local std::uint32_t tag = 0;
    if (tag == 0) [[unlikely]] {
        do {
            tag = next.fetch_add(1, std::memory_order_relaxed) + 1;
        } while (tag == 0);
    }
    return tag;
}

void* allocate_node(std::size_t size) {
    return alloc_block(node_class_of(size), size);
}

void deallocate_node(void* p, std::size_t size) noexcept {
    free_to_cache(p, node_class_of(size));
}

std::size_t cached_node_blocks() noexcept {
    std::size_t n = 0;
    for (std::uint32_t k : tls_node_cache.count) {
        n += k;
    }
    return n;
}

std::size_t reaped_node_blocks() noexcept {
    return reaped_blocks.load(std::memory_order_relaxed);
}

} // namespace detail

// ---- nodes -----------------------------------------------------------------------------

namespace detail {

void node::release_slow() noexcept {
    // Walk up iteratively: dropping a long chain must not recurse once per link.
    node* n = this;
    while (n != nullptr) {
        node* p = n->parent;
        n->destroy(n);
        if (p == nullptr || p->immortal || !p->drop_ref()) {
            break;
        }
        n = p;
    }
}

// ---- foreign timers ----------------------------------------------------------------------
//
// A deadline node's timer is on the node's clock: the clock of the loop (or thread) that made
// it. A loop whose task waits under it from another thread adds a timer of its own
// (arm_foreign_deadline), so that the wait ends on time even while the node's clock's thread
// is busy, blocked or gone, and without a wake from that thread. Each foreign timer holds a
// reference on the node, and is on the node's `foreign` list while scheduled. Whoever takes
// it out of its clock's heap owns it: the node's cancel, which unschedules them all under the
// node's lock (lock order: the node's lock, then a clock's); its own firing, which unlinks it
// under that lock (or finds that a cancel has taken it from the list, and is done with it);
// or its loop's destruction, likewise.

namespace {

std::atomic<std::size_t> live_foreign_timers{0};

void unlink_foreign(deadline_state* d, foreign_timer* e) noexcept {
    if (e->prev != nullptr) {
        e->prev->next = e->next;
    } else {
        d->foreign = e->next;
    }
    if (e->next != nullptr) {
        e->next->prev = e->prev;
    }
    e->linked = false;
}

void delete_foreign(foreign_timer* e) noexcept {
    deadline_state* d = e->owner;
    delete e;
    live_foreign_timers.fetch_sub(1, std::memory_order_relaxed);
    d->release();
}

// Under d's lock, with d just made done and its timer armed: unschedules d's foreign timers
// and frees them (their references are never d's last: see the callers). A timer we can't
// unschedule is firing on its loop: that firing owns it, once it has our lock (it finds it
// unlinked). Out of line: a node with foreign timers is the exception, and the common cancel
// pays a load and a branch for it.
[[gnu::noinline, gnu::cold]] void drop_foreign_timers_locked(deadline_state* d) noexcept {
    foreign_timer* e = std::exchange(d->foreign, nullptr);
    while (e != nullptr) {
        foreign_timer* next = e->next;
        e->linked = false;
        if (e->clk->unschedule(e->timer)) {
            delete_foreign(e);
        }
        e = next;
    }
}

// Under s's lock, once it is done, if its timer was armed (so it is a deadline_state).
inline void drop_foreign_timers(cancel_state* s, bool armed) noexcept {
    if (armed && static_cast<deadline_state*>(s)->foreign != nullptr) [[unlikely]] {
        drop_foreign_timers_locked(static_cast<deadline_state*>(s));
    }
}

// Takes the foreign timer of `t`, which its clock has taken out of its heap, off its owner's
// list: from then on it is the caller's alone. Returns its owner.
deadline_state* take_foreign(timer_node* t) noexcept {
    auto* e = static_cast<foreign_timer*>(t->data);
    deadline_state* d = e->owner;
    d->lock.lock();
    if (e->linked) {
        unlink_foreign(d, e);
    }
    d->lock.unlock();
    return d;
}

void on_foreign_deadline(timer_node* t) noexcept {
    deadline_state* d = take_foreign(t);
    // As the node's own timer does (on_deadline).
    d->cancel(errc::deadline_exceeded, d->deadline_cause, true);
    delete_foreign(static_cast<foreign_timer*>(t->data)); // may be the node's last reference
}

} // namespace

void arm_foreign_deadline(cancel_state* c, tether::clock& clk) noexcept {
    // The deadline is its nearest deadline node's: the cancel nodes between inherit it.
    cancel_state* s = c;
    while (s->kind != node_kind::deadline) {
        s = s->parent != nullptr ? s->parent->canceler : nullptr;
        if (s == nullptr) {
            return;
        }
    }
    auto* d = static_cast<deadline_state*>(s);
    if (d->deadline != c->deadline || d->is_done()) {
        return;
    }
    d->lock.lock();
    if (d->state.load(std::memory_order_relaxed) != 0 || !d->timer_armed) {
        d->lock.unlock();
        return;
    }
    for (foreign_timer* e = d->foreign; e != nullptr; e = e->next) {
        if (e->clk == &clk) {
            d->lock.unlock();
            return; // this clock fires it already
        }
    }
    auto* e = new (std::nothrow) foreign_timer;
    if (e == nullptr) {
        d->lock.unlock();
        return;
    }
    e->timer.when = d->deadline;
    e->timer.fire = &on_foreign_deadline;
    e->timer.data = e;
    e->owner = d;
    e->clk = &clk;
    e->next = d->foreign;
    if (d->foreign != nullptr) {
        d->foreign->prev = e;
    }
    d->foreign = e;
    e->linked = true;
    d->add_ref(); // held by e
    live_foreign_timers.fetch_add(1, std::memory_order_relaxed);
    try {
        // Under the lock, as with_deadline schedules the node's own timer: a cancel can't
        // unschedule it before it is scheduled. The clock never fires inside schedule().
        clk.schedule(e->timer);
    } catch (...) {
        unlink_foreign(d, e);
        d->lock.unlock();
        delete_foreign(e); // the caller's context holds the node too
        return;
    }
    d->lock.unlock();
}

bool is_foreign_timer(const timer_node* t) noexcept {
    return t->fire == &on_foreign_deadline;
}

void drop_foreign_timer(timer_node* t) noexcept {
    take_foreign(t);
    delete_foreign(static_cast<foreign_timer*>(t->data));
}

std::size_t foreign_timer_count() noexcept {
    return live_foreign_timers.load(std::memory_order_relaxed);
}

bool cancel_state::add_callback(callback_node* cb) noexcept {
    if (is_done()) {
        return false; // done is final: no need to lock to know it
    }
    lock.lock();
    if (state.load(std::memory_order_relaxed) != 0) {
        lock.unlock();
        return false;
    }
    cb->prev = nullptr;
    cb->next = head;
    if (head) {
        head->prev = cb;
    }
    head = cb;
    cb->linked = true;
    lock.unlock();
    return true;
}

void cancel_state::remove_callback(callback_node* cb) noexcept {
    lock.lock();
    if (cb->linked) {
        if (cb->prev) {
            cb->prev->next = cb->next;
        } else {
            head = cb->next;
        }
        if (cb->next) {
            cb->next->prev = cb->prev;
        }
        cb->linked = false;
        lock.unlock();
        return;
    }
    if (running.load(std::memory_order_relaxed) == cb && running_thread != thread_tag()) {
        lock.unlock();
        // Running on another thread: wait until it has returned. The canceler never touches
        // cb after its callback returns, and cb can't run again (the state is done), so once
        // running has moved on the caller may free cb. Callbacks are short (they post a
        // wakeup), so yielding beats parking here.
        while (running.load(std::memory_order_acquire) == cb) {
            std::this_thread::yield();
        }
        return;
    }
    // Not linked and not running: never armed, already run, or removed from inside its own
    // callback (which returns at once; the canceler won't touch cb again).
    lock.unlock();
}

void cancel_state::cancel(std::error_code e, std::error_code c, bool remove_from_parent) noexcept {
    // Done is final, so a node seen done needs no lock of its own (the common case of a
    // handle destroyed after it was called).
    bool done = is_done();
    if (!done) {
        lock.lock();
        done = state.load(std::memory_order_relaxed) != 0;
        if (done) {
            lock.unlock();
        }
    }
    if (done) {
        // Someone else canceled first. As in Go, where a cancel holds the mutex while it
        // cancels the children, return only once the whole subtree is done.
        if (propagating.load(std::memory_order_acquire)) {
            wait_propagation();
        }
        // The canceler may be the parent, which may still be propagating into this node on
        // another thread without holding a reference to it. Our caller may drop the last
        // reference as soon as we return, so wait until the parent is done with us.
        if (remove_from_parent) {
            unlink_from_parent();
        }
        return;
    }
    assert(e == errc::canceled || e == errc::deadline_exceeded);
    const std::uint8_t done_state =
        e == errc::deadline_exceeded ? deadline_exceeded_state : canceled_state;
    cause = c ? c : e;
    if (head != nullptr) {
        // Before the state: whoever sees this node done sees it propagating too.
        propagating.store(true, std::memory_order_relaxed);
        running_thread = thread_tag();
        state.store(done_state, std::memory_order_release);
        cancel_subtree(remove_from_parent);
        return;
    }
    state.store(done_state, std::memory_order_release);
    // Nothing registered, the common case: no loop, no deferred work.
    bool armed = take_timer();
    drop_foreign_timers(this, armed);
    lock.unlock();
    // Only a deadline_state's timer is ever armed; its reference is never our caller's last.
    if (armed && clk->unschedule(static_cast<deadline_state*>(this)->timer)) {
        release();
    }
    if (remove_from_parent) {
        unlink_from_parent();
    }
}

[[gnu::noinline]] void cancel_state::cancel_subtree(bool remove_from_parent) noexcept {
    // Cancel this node, then its subtree depth first, in a loop rather than by recursion, so
    // that a chain of any depth is canceled in constant stack. `top` is the node whose
    // callbacks are being run, with its lock held at the top of the loop. A child is reached
    // through its link on its parent's list (a node with no fn); while the child and its
    // subtree are canceled, the parent's `running` names that link as for any callback, so
    // an owner dropping the child waits until we are done with it (remove_callback), and
    // the parent is `top->parent->canceler` again when the child is finished.
    //
    // Only callbacks defer work, so a cancel that runs none skips the thread-local scope.
    // Made on first use, it ends when this function returns, after everything below.
    std::optional<deferred_scope> scope;
    cancel_state* top = this;
    while (top != nullptr) {
        callback_node* cb = top->head;
        if (cb == nullptr) {
            // top and its subtree are done: release its timer, go back up to its parent.
            bool armed = top->take_timer();
            drop_foreign_timers(top, armed);
            top->propagating.store(false, std::memory_order_release);
            top->lock.unlock();
            cancel_state* up = top == this ? nullptr : top->parent->canceler;
            // Only a deadline_state's timer is ever armed. The timer's reference is never
            // top's last: its owner holds one, and waits on up->running or top->unlinked for
            // us.
            if (armed && top->clk->unschedule(static_cast<deadline_state*>(top)->timer)) {
                top->release();
            }
            if (up != nullptr) {
                // Our last touch of the child: from here its owner may free it.
                top->unlinked.store(true, std::memory_order_release);
                up->lock.lock();
                up->running.store(nullptr, std::memory_order_release);
            }
            top = up;
            continue;
        }
        top->head = cb->next;
        if (top->head) {
            top->head->prev = nullptr;
            // A fan-out walks a list of nodes each in its own block (a child's link, a
            // waiter in a coroutine frame): start loading the next one while this one runs.
            __builtin_prefetch(top->head->next);
        }
        cb->linked = false;
        top->running_thread = thread_tag();
        top->running.store(cb, std::memory_order_relaxed);
        top->lock.unlock();
        if (cb->fn != nullptr) {
            if (!scope) {
                scope.emplace();
            }
            cb->fn(cb); // may free cb: don't touch it from here on
            top->lock.lock();
            top->running.store(nullptr, std::memory_order_release);
            continue;
        }
        // A child's link: cancel the child with our reason, unless it is done already.
        auto* child = static_cast<cancel_state*>(cb->data);
        child->lock.lock();
        if (child->state.load(std::memory_order_relaxed) != 0) {
            child->lock.unlock();
            child->unlinked.store(true, std::memory_order_release); // our last touch of it
            top->lock.lock();
            top->running.store(nullptr, std::memory_order_release);
            continue;
        }
        child->cause = top->cause;
        // Before the state: whoever sees the child done sees it propagating too.
        child->propagating.store(true, std::memory_order_relaxed);
        child->running_thread = thread_tag();
        // Our reason: top's state, which this thread wrote or read under top's lock.
        child->state.store(top->state.load(std::memory_order_relaxed), std::memory_order_release);
        top = child;
    }
    if (remove_from_parent) {
        unlink_from_parent();
    }
}

void cancel_state::wait_propagation() noexcept {
    // running_thread names the propagating thread from the moment propagating is set, under
    // the lock. A callback run by that cancel may cancel this node again: it must not wait
    // for itself.
    lock.lock();
    bool mine = running_thread == thread_tag();
    lock.unlock();
    if (mine) {
        return;
    }
    // Callbacks are short (they post a wakeup), so yielding beats parking here.
    while (propagating.load(std::memory_order_acquire)) {
        std::this_thread::yield();
    }
}

void cancel_state::unlink_from_parent_slow() noexcept {
    // Not unlinked yet (once it is, the common case of a handle called and then destroyed,
    // unlink_from_parent() takes no lock).
    parent->canceler->remove_callback(&parent_link);
    unlinked.store(true, std::memory_order_release);
}

std::uint32_t registration_count(const context& ctx) noexcept {
    node* n = ctx.node();
    if (n == nullptr || n->canceler != n) {
        return 0; // not a cancel state of its own (a child born done shares its parent's)
    }
    auto* c = static_cast<cancel_state*>(n);
    c->lock.lock();
    std::uint32_t k = 0;
    for (callback_node* cb = c->head; cb != nullptr; cb = cb->next) {
        ++k; // a test's question: a walk, where a count would cost every node 4 bytes
    }
    c->lock.unlock();
    return k;
}

} // namespace detail

// ---- roots -----------------------------------------------------------------------------

namespace {

void destroy_plain(detail::node* n) noexcept {
    delete_node(n);
}

detail::node* todo_node() noexcept {
    static detail::node n;
    static const bool init = [] {
        n.kind = detail::node_kind::todo;
        n.immortal = true;
        n.clk = &real_clock();
        n.destroy = &destroy_plain;
        return true;
    }();
    (void)init;
    return &n;
}

} // namespace

context background(clock& clk) {
    if (&clk == &real_clock()) {
        return context{};
    }
    auto* n = new_node<detail::node>();
    n->kind = detail::node_kind::background;
    n->clk = &clk;
    n->destroy = &destroy_plain;
    return context::adopt(n);
}

context todo() noexcept {
    return context::adopt(todo_node());
}

std::error_code cause(const context& ctx) noexcept {
    detail::cancel_state* c = ctx.node() ? ctx.node()->canceler : nullptr;
    if (c == nullptr || !c->is_done()) {
        return {};
    }
    return c->cause;
}

// ---- cancel_registration ---------------------------------------------------------------

void cancel_registration::trampoline(detail::callback_node* cb) noexcept {
    // owner_ belongs to the thread that owns the registration: the canceler must not write
    // it, and disarm() must still ask the cancel state, which waits while we run.
    // node_ is our first member (standard layout), so its address is ours; its data is the
    // caller's, which saves a field (every suspended await holds a registration).
    static_assert(std::is_standard_layout_v<cancel_registration>);
    static_cast<cancel_registration*>(static_cast<void*>(cb))->fn_(cb->data);
}

bool cancel_registration::arm(const context& ctx, function fn, void* data) noexcept {
    return arm(ctx.node() ? ctx.node()->canceler : nullptr, fn, data);
}

bool cancel_registration::arm(detail::cancel_state* c, function fn, void* data) noexcept {
    // Hold the cancel state until disarm(): the contexts that named it may all be gone by
    // then, and disarm() has to ask it whether our callback is running.
    return link(c, fn, data, true);
}

bool cancel_registration::arm_borrowed(const context& ctx, function fn, void* data) noexcept {
    // No reference: the caller's context keeps the state alive until disarm() (a node holds
    // its parent, and the canceler is the node or one of its ancestors).
    return link(ctx.node() ? ctx.node()->canceler : nullptr, fn, data, false);
}

bool cancel_registration::link(detail::cancel_state* c, function fn, void* data,
                               bool hold) noexcept {
    disarm();
    if (c == nullptr) {
        return true;
    }
    fn_ = fn;
    node_.fn = &trampoline;
    node_.data = data;
    if (!c->add_callback(&node_)) {
        return false;
    }
    if (hold) {
        c->add_ref();
    }
    owner_ = c;
    node_.holds_ref = hold;
    return true;
}

void cancel_registration::disarm_armed() noexcept {
    // Always ask the cancel state, even if the callback has run: it unlinks us, or waits
    // while the callback runs on another thread.
    if (detail::cancel_state* c = std::exchange(owner_, nullptr)) {
        c->remove_callback(&node_);
        if (node_.holds_ref) {
            c->release();
        }
    }
}

// ---- with_cancel / with_deadline -------------------------------------------------------

namespace {

template <class State>
void destroy_state(detail::node* n) noexcept {
    delete_node(static_cast<State*>(n));
}

void on_deadline(detail::timer_node* t) noexcept {
    auto* self = static_cast<detail::deadline_state*>(t->data);
    self->cancel(errc::deadline_exceeded, self->deadline_cause, true);
    self->release(); // the reference the timer held
}

// Registers `n`, whose other fields are all set, on `pc`, its parent's cancel state (null:
// never done): from then on the parent may cancel it from another thread. A parent that is
// already done gives a child born done with the parent's error and cause.
inline void link_to_canceler(detail::cancel_state* n, detail::cancel_state* pc) noexcept {
    n->parent_link.fn = nullptr; // marks a child's link: the parent's cancel descends into n
    n->parent_link.data = n;
    if (pc == nullptr) {
        n->unlinked.store(true, std::memory_order_relaxed); // nothing to unlink from
    } else if (!pc->add_callback(&n->parent_link)) {
        n->unlinked.store(true, std::memory_order_relaxed);
        n->cancel(pc->error(), pc->cause, false);
    }
}

// Makes a cancel node under `parent`, registered on the parent's cancel state: a
// cancel_state, or a deadline_state for `deadline`. A parent that is already done gives a
// child born done with the parent's error and cause. Every field is set before the node is
// linked: from then on the parent may cancel it from another thread.
template <class State = detail::cancel_state>
State* make_cancel_node(const context& parent, time_point deadline = time_point::max(),
                        std::error_code deadline_cause = {}) {
    auto* n = new_node<State>();
    // One reference for the context and one for the handle (make_pair_for), counted before
    // anyone else can see the node.
    n->refs.store(2, std::memory_order_relaxed);
    n->kind = detail::node_kind::cancel;
    n->destroy = &destroy_state<State>;
    detail::link_child(*n, parent);
    detail::cancel_state* pc = n->canceler; // the parent's
    n->canceler = n;
    if constexpr (std::is_same_v<State, detail::deadline_state>) {
        // A deadline equal to the parent's is the child's own too (Go's timerCtx): its timer
        // reports its cause if it fires before the parent's reaches it.
        n->kind = detail::node_kind::deadline;
        if (deadline <= n->deadline) {
            n->deadline = deadline;
            n->deadline_cause = deadline_cause;
        }
        n->timer.fire = &on_deadline;
        n->timer.data = n;
    }
    link_to_canceler(n, pc);
    return n;
}

// Hands out the two references make_cancel_node counted.
std::pair<context, cancel_handle> make_pair_for(detail::cancel_state* n) {
    return {context::adopt(n), cancel_handle{n}};
}

// Returns the cancel state of `parent` if it is already done, else null.
detail::cancel_state* done_canceler(const context& parent) noexcept {
    detail::cancel_state* pc = parent.node() ? parent.node()->canceler : nullptr;
    return pc != nullptr && pc->is_done() ? pc : nullptr;
}

// The target of the handles of children born done: done, immortal, and with no parent, so
// canceling it does nothing.
[[gnu::noinline]] detail::cancel_state* make_inert_state() noexcept {
    static detail::cancel_state s;
    s.kind = detail::node_kind::cancel;
    s.immortal = true;
    s.canceler = &s;
    s.clk = &real_clock();
    s.destroy = &destroy_state<detail::cancel_state>;
    s.cause = errc::canceled;
    s.unlinked.store(true, std::memory_order_relaxed); // no parent
    s.state.store(1, std::memory_order_release);
    return &s;
}

// Small enough to inline: a child born done costs one guard check, not a call.
inline detail::cancel_state* inert_state() noexcept {
    static detail::cancel_state* const s = make_inert_state();
    return s;
}

// Makes a child of a parent that is already done. Such a child is born done with the
// parent's error and cause, and nothing can change that, so it needs no cancel state of its
// own: a plain node names the parent's, and its handle has nothing to cancel. That is a
// small allocation and no lock, where a tree built under a canceled root would otherwise
// pay a full cancel state per node.
std::pair<context, cancel_handle> make_done_child(const context& parent, time_point deadline) {
    auto* n = new_node<detail::node>();
    n->kind = detail::node_kind::cancel;
    n->destroy = &destroy_plain;
    detail::link_child(*n, parent); // canceler: the parent's, done
    if (deadline <= n->deadline && deadline != time_point::max()) {
        n->kind = detail::node_kind::deadline; // prints as WithDeadline, as Go's timerCtx
        n->deadline = deadline;
    }
    return {context::adopt(n), cancel_handle{inert_state()}};
}

} // namespace

void cancel_handle::cancel(std::error_code c) const noexcept {
    if (s_ != nullptr) {
        s_->cancel(errc::canceled, c, true);
    }
}

void cancel_handle::reset() noexcept {
    detail::cancel_state* s = std::exchange(s_, nullptr);
    if (s == nullptr || s->immortal) {
        return; // inert_state(), the handle of a child born done: nothing to cancel
    }
    if (s->refs.load(std::memory_order_acquire) == 1) {
        // The handle holds the last reference: no context, child, registration or timer
        // refers to the node any more (each holds a reference), so canceling it could change
        // nothing anyone can observe. Only the parent's cancel may still reach it, through
        // its link on the parent: unlink it (or wait for that cancel), and free it, without
        // taking its own lock. Go's cancel of a context nobody holds is as invisible.
        s->unlink_from_parent();
        s->release_slow();
        return;
    }
    s->cancel(errc::canceled, {}, true);
    s->release();
}

namespace detail {

void init_cancel_child(cancel_state* n, const context& parent,
                       void (*destroy)(node*) noexcept) noexcept {
    n->refs.store(2, std::memory_order_relaxed); // the caller's context and cancel reference
    n->kind = node_kind::cancel;
    n->destroy = destroy;
    detail::link_child(*n, parent);
    cancel_state* pc = n->canceler; // the parent's
    n->canceler = n;
    link_to_canceler(n, pc);
}

void (*const cancel_state_destroy)(node*) noexcept = &destroy_state<cancel_state>;

} // namespace detail

std::pair<context, cancel_handle> with_cancel(const context& parent) {
    if (done_canceler(parent) != nullptr) {
        return make_done_child(parent, time_point::max());
    }
    return make_pair_for(make_cancel_node(parent));
}

std::pair<context, cancel_handle> with_cancel_cause(const context& parent) {
    return with_cancel(parent);
}

namespace {

// with_deadline_cause, given the time on the parent's clock if the caller has just read it:
// with_timeout reads the clock once, not twice (a read costs tens of ns in a VM).
std::pair<context, cancel_handle> with_deadline_at(const context& parent, time_point d,
                                                   std::error_code cause, const time_point* now) {
    if (parent.has_deadline() && *parent.deadline() < d) {
        // The parent's deadline comes first: the child is a plain cancel node (Go does the
        // same), and the parent's timer ends both. A tie is a deadline child, as in Go
        // (`cur.Before(d)`): whichever timer fires first gives its cause.
        return with_cancel(parent);
    }
    if (done_canceler(parent) != nullptr) {
        return make_done_child(parent, d);
    }
    detail::deadline_state* n = make_cancel_node<detail::deadline_state>(parent, d, cause);
    auto result = make_pair_for(n);
    if (d <= (now != nullptr ? *now : n->clk->now())) {
        n->cancel(errc::deadline_exceeded, cause, true);
        return result;
    }
    n->lock.lock();
    if (n->state.load(std::memory_order_relaxed) == 0) {
        // Scheduling under our lock orders it before any cancel, which unschedules. The
        // clock never fires inside schedule(), and fires with its own lock released, so
        // this nesting can't deadlock.
        n->timer_armed = true;
        n->timer.when = d;
        n->add_ref(); // held by the timer until it fires or is unscheduled
        try {
            n->clk->schedule(n->timer);
        } catch (...) {
            // The clock could not grow its heap: undo, and let `result` cancel on unwind.
            n->timer_armed = false;
            n->lock.unlock();
            n->release();
            throw;
        }
    }
    n->lock.unlock();
    return result;
}

} // namespace

std::pair<context, cancel_handle> with_deadline_cause(const context& parent, time_point d,
                                                      std::error_code cause) {
    return with_deadline_at(parent, d, cause, nullptr);
}

std::pair<context, cancel_handle> with_deadline(const context& parent, time_point d) {
    return with_deadline_at(parent, d, {}, nullptr);
}

std::pair<context, cancel_handle> with_timeout(const context& parent, duration timeout) {
    return with_timeout_cause(parent, timeout, {});
}

std::pair<context, cancel_handle> with_timeout_cause(const context& parent, duration timeout,
                                                     std::error_code cause) {
    time_point now = parent.clock().now();
    return with_deadline_at(parent, now + timeout, cause, &now);
}

// ---- without_cancel --------------------------------------------------------------------

context without_cancel(const context& parent) {
    auto* n = new_node<detail::node>();
    n->kind = detail::node_kind::without_cancel;
    n->destroy = &destroy_plain;
    detail::link_child(*n, parent);
    n->canceler = nullptr;
    n->deadline = time_point::max();
    return context::adopt(n);
}

// ---- after_func ------------------------------------------------------------------------

namespace detail {

struct after_func_state {
    enum : int { pending, started, stopped };
    std::atomic<int> st{pending};
    std::function<void()> fn;
    executor* ex = nullptr;
    context ctx; // keeps the cancel state alive while registered
    callback_node cb;
    std::shared_ptr<after_func_state> self; // held while registered, then until posted
    after_func_state* next = nullptr;       // in the canceling thread's deferred queue
};

} // namespace detail

namespace {

void on_after_func(detail::callback_node* cb) noexcept {
    auto* s = static_cast<detail::after_func_state*>(cb->data);
    int expected = detail::after_func_state::pending;
    if (!s->st.compare_exchange_strong(expected, detail::after_func_state::started)) {
        return; // stop() won; it waits for us to return, then drops s->self
    }
    // Called inside a cancel's deferred_scope: queue s (s->self keeps it alive) and post it
    // once the outermost cancel on this thread is complete.
    assert(tls_deferred.depth > 0);
    s->next = nullptr;
    if (tls_deferred.tail != nullptr) {
        tls_deferred.tail->next = s;
    } else {
        tls_deferred.head = s;
    }
    tls_deferred.tail = s;
}

void post_deferred() noexcept {
    while (detail::after_func_state* s = tls_deferred.head) {
        tls_deferred.head = s->next;
        if (tls_deferred.head == nullptr) {
            tls_deferred.tail = nullptr;
        }
        // May be the last reference once the handle is gone.
        std::shared_ptr<detail::after_func_state> keep = std::move(s->self);
        executor* ex = s->ex != nullptr ? s->ex : &real_executor();
        try {
            ex->post([keep = std::move(keep)] { keep->fn(); });
        } catch (...) {
            // Out of memory while queueing: nothing sensible to report from a cancel.
        }
    }
}

} // namespace

after_func_handle after_func(const context& ctx, std::function<void()> fn) {
    auto s = std::make_shared<detail::after_func_state>();
    s->fn = std::move(fn);
    s->ex = current_executor();
    s->ctx = ctx;
    s->cb.fn = &on_after_func;
    s->cb.data = s.get();
    detail::cancel_state* c = ctx.node() ? ctx.node()->canceler : nullptr;
    if (c == nullptr) {
        return after_func_handle{std::move(s)}; // never done: fn never runs
    }
    s->self = s;
    if (!c->add_callback(&s->cb)) {
        // Already done: start it now, but never inside this call.
        s->self.reset();
        s->st.store(detail::after_func_state::started, std::memory_order_relaxed);
        auto run = [keep = s] { keep->fn(); };
        if (s->ex != nullptr) {
            s->ex->post(std::move(run));
        } else {
            real_executor().post(std::move(run));
        }
    }
    return after_func_handle{std::move(s)};
}

bool after_func_handle::stop() const noexcept {
    if (!s_) {
        return false;
    }
    int expected = detail::after_func_state::pending;
    if (!s_->st.compare_exchange_strong(expected, detail::after_func_state::stopped)) {
        return false;
    }
    detail::cancel_state* c = s_->ctx.node() ? s_->ctx.node()->canceler : nullptr;
    if (c != nullptr) {
        c->remove_callback(&s_->cb);
    }
    s_->self.reset();
    return true;
}

// ---- printing --------------------------------------------------------------------------

namespace {

// Appends the digits of v / 10^prec's fraction (".25"), without trailing zeros, and no point
// when the fraction is zero; returns v / 10^prec.
std::uint64_t append_fraction(std::uint64_t v, int prec, std::string& out) {
    std::uint64_t scale = 1;
    for (int i = 0; i < prec; ++i) {
        scale *= 10;
    }
    std::uint64_t frac = v % scale;
    if (frac != 0) {
        std::string digits(static_cast<std::size_t>(prec), '0');
        for (int i = prec - 1; i >= 0; --i) {
            digits[static_cast<std::size_t>(i)] = static_cast<char>('0' + frac % 10);
            frac /= 10;
        }
        digits.erase(digits.find_last_not_of('0') + 1);
        out += '.';
        out += digits;
    }
    return v / scale;
}

} // namespace

namespace detail {

void append_go_duration(std::chrono::nanoseconds d, std::string& out) {
    // Go's time.Duration.String(): "0s", "750ns", "1.5µs", "2.25ms", "3s", "1m0.5s", "2h0m0s".
    std::int64_t ns = d.count();
    auto u = static_cast<std::uint64_t>(ns);
    if (ns < 0) {
        out += '-';
        u = ~u + 1; // also right for the most negative value
    }
    if (u == 0) {
        out += "0s";
        return;
    }
    if (u < 1'000'000'000) {
        const char* unit = "ns";
        int prec = 0;
        if (u >= 1'000'000) {
            unit = "ms";
            prec = 6;
        } else if (u >= 1'000) {
            unit = "\xc2\xb5s"; // Go prints the micro sign, U+00B5, in UTF-8
            prec = 3;
        }
        std::string frac;
        std::uint64_t whole = append_fraction(u, prec, frac);
        fmt::format_to(std::back_inserter(out), "{}{}{}", whole, frac, unit);
        return;
    }
    std::string frac;
    std::uint64_t secs = append_fraction(u, 9, frac);
    std::uint64_t mins = secs / 60;
    std::uint64_t hours = mins / 60;
    if (hours > 0) {
        fmt::format_to(std::back_inserter(out), "{}h{}m", hours, mins % 60);
    } else if (mins > 0) {
        fmt::format_to(std::back_inserter(out), "{}m", mins);
    }
    fmt::format_to(std::back_inserter(out), "{}{}s", secs % 60, frac);
}

void append_go_time(time_point t, const clock& clk, std::string& out) {
    // Go's Time.String() of a time with a monotonic reading:
    // "2006-01-02 15:04:05.999999999 +0000 UTC m=+3.000000001". The wall time is known only
    // for the real clock (printed in UTC); any other clock prints its reading alone. The
    // reading is the steady clock's (time since its epoch), where Go's counts from the
    // process's start.
    using std::chrono::duration_cast;
    using std::chrono::nanoseconds;
    using std::chrono::system_clock;
    if (&clk == &real_clock()) {
        auto wall = system_clock::now() + duration_cast<system_clock::duration>(t - clk.now());
        auto since = duration_cast<nanoseconds>(wall.time_since_epoch()).count();
        std::int64_t secs = since / 1'000'000'000;
        std::int64_t sub = since % 1'000'000'000;
        if (sub < 0) {
            sub += 1'000'000'000;
            --secs;
        }
        std::time_t tt = static_cast<std::time_t>(secs);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec);
        append_fraction(static_cast<std::uint64_t>(sub), 9, out);
        out += " +0000 UTC ";
    }
    std::int64_t m = duration_cast<nanoseconds>(t.time_since_epoch()).count();
    std::uint64_t mu = static_cast<std::uint64_t>(m);
    if (m < 0) {
        mu = ~mu + 1;
    }
    fmt::format_to(std::back_inserter(out), "m={}{}.{:09}", m < 0 ? '-' : '+', mu / 1'000'000'000,
                   mu % 1'000'000'000);
}

} // namespace detail

namespace {

// Appends one link of a chain.
void describe(const detail::node* n, std::string& out) {
    switch (n->kind) {
    case detail::node_kind::background:
        out += "context.Background";
        break;
    case detail::node_kind::todo:
        out += "context.TODO";
        break;
    case detail::node_kind::cancel:
        out += ".WithCancel";
        break;
    case detail::node_kind::deadline:
        // Go: ".WithDeadline(" + deadline.String() + " [" + time.Until(deadline).String() + "])"
        out += ".WithDeadline(";
        detail::append_go_time(n->deadline, *n->clk, out);
        out += " [";
        detail::append_go_duration(n->deadline - n->clk->now(), out);
        out += "])";
        break;
    case detail::node_kind::value:
        out += '.';
        static_cast<const detail::value_node_base*>(n)->describe(n, out);
        break;
    case detail::node_kind::without_cancel:
        out += ".WithoutCancel";
        break;
    }
}

} // namespace

std::string to_string(const context& ctx) {
    // Root first. The chain is collected rather than walked by recursion: it may be deep.
    std::vector<const detail::node*> chain;
    for (const detail::node* n = ctx.node(); n != nullptr; n = n->parent) {
        chain.push_back(n);
    }
    std::string out;
    if (chain.empty() || (chain.back()->kind != detail::node_kind::background &&
                          chain.back()->kind != detail::node_kind::todo)) {
        out += "context.Background"; // background() itself has no node
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        describe(*it, out);
    }
    return out;
}

} // namespace tether
