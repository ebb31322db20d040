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

constexpr std::size_t granule = 64;
constexpr std::size_t classes = 32; // up to 2 KiB
constexpr std::size_t max_cached_per_class = 4096;

struct free_block {
    free_block* next;
};

struct free_lists {
    free_block* head[classes] = {};
    std::size_t count[classes] = {};
    ~free_lists() {
        for (std::size_t c = 0; c < classes; ++c) {
            while (free_block* b = head[c]) {
                head[c] = b->next;
                ::operator delete(b);
            }
        }
    }
};

thread_local free_lists tls_lists;

} // namespace

void* allocate_frame(std::size_t n) {
    std::size_t c = (n + granule - 1) / granule;
    if (!recycle || c >= classes) {
        return ::operator new(n);
    }
    free_lists& l = tls_lists;
    if (free_block* b = l.head[c]) {
        l.head[c] = b->next;
        --l.count[c];
        return b;
    }
    return ::operator new(c * granule);
}

void deallocate_frame(void* p, std::size_t n) noexcept {
    std::size_t c = (n + granule - 1) / granule;
    if (!recycle || c >= classes) {
        ::operator delete(p);
        return;
    }
    free_lists& l = tls_lists;
    if (l.count[c] >= max_cached_per_class) {
        ::operator delete(p);
        return;
    }
    auto* b = static_cast<free_block*>(p);
    b->next = l.head[c];
    l.head[c] = b;
    ++l.count[c];
}

} // namespace tether::detail
