#include "runtime/detail/frame_allocator.hpp"

#include <cstdlib>
#include <new>

namespace tether::detail {

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool recycle = false;
#else
constexpr bool recycle = true;
#endif

// Size classes are 16k + 8 bytes (24, 40, ..., 2040): malloc adds an 8-byte header and rounds
// the chunk to 16, so a block of 16k + 8 fills its chunk exactly and a frame wastes at most 15
// bytes to rounding (64-byte classes wasted up to 63, 32 on average: a tenth of a small frame).
constexpr std::size_t granule = 16;
constexpr std::size_t classes = 128; // up to 2 KiB
constexpr std::size_t max_cached_per_class = 4096;

constexpr std::size_t class_of(std::size_t n) {
    return (n + granule / 2 - 1) / granule;
}
constexpr std::size_t class_size(std::size_t c) {
    return c * granule + granule / 2;
}
static_assert(class_size(class_of(296)) == 296 && class_size(class_of(297)) == 312);
static_assert(class_size(class_of(1)) >= sizeof(void*));

struct free_block {
    free_block* next;
};

struct free_lists;

// The calling thread's lists, reached with one %fs-relative load: an initial-exec pointer
// (8 bytes of static TLS, which even a dlopen'ed libtether gets), where the lists themselves
// are 3 KiB of dynamic TLS that a shared library reaches through __tls_get_addr, a fifth of
// the cost of awaiting a task that completes at once. Null before the thread's first frame,
// and again once its lists are destroyed at thread exit.
[[gnu::tls_model("initial-exec")]] constinit thread_local free_lists* tls_current = nullptr;
[[gnu::tls_model("initial-exec")]] constinit thread_local bool tls_finished = false;

struct free_lists {
    free_block* head[classes] = {};
    std::size_t count[classes] = {};
    ~free_lists() {
        tls_current = nullptr;
        tls_finished = true; // frames freed later in this thread's exit go to operator delete
        for (std::size_t c = 0; c < classes; ++c) {
            while (free_block* b = head[c]) {
                head[c] = b->next;
                ::operator delete(b);
            }
        }
    }
};

thread_local free_lists tls_lists;

[[gnu::noinline]] free_lists* first_use() noexcept {
    if (tls_finished) {
        return nullptr;
    }
    tls_current = &tls_lists; // registers its destructor for this thread
    return tls_current;
}

free_lists* lists() noexcept {
    free_lists* l = tls_current;
    return l != nullptr ? l : first_use();
}

} // namespace

void* allocate_frame(std::size_t n) {
    std::size_t c = class_of(n);
    if (!recycle || c >= classes) {
        return ::operator new(n);
    }
    free_lists* l = lists();
    if (l == nullptr) {
        return ::operator new(class_size(c));
    }
    if (free_block* b = l->head[c]) {
        l->head[c] = b->next;
        --l->count[c];
        return b;
    }
    return ::operator new(class_size(c));
}

void deallocate_frame(void* p, std::size_t n) noexcept {
    std::size_t c = class_of(n);
    if (!recycle || c >= classes) {
        ::operator delete(p);
        return;
    }
    free_lists* l = lists();
    if (l == nullptr || l->count[c] >= max_cached_per_class) {
        ::operator delete(p);
        return;
    }
    auto* b = static_cast<free_block*>(p);
    b->next = l->head[c];
    l->head[c] = b;
    ++l->count[c];
}

} // namespace tether::detail
