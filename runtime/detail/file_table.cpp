#include "runtime/detail/file_table.hpp"

#include "runtime/detail/loop_impl.hpp"

#include <liburing.h>

#include <sys/resource.h>

namespace tether::detail {

bool file_table::create() noexcept {
    tried_ = true;
    // The kernel refuses a table larger than RLIMIT_NOFILE.
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < size_) {
        size_ = static_cast<unsigned>(rl.rlim_cur);
    }
    if (size_ == 0) {
        return false;
    }
    try {
        free_.reserve(size_); // remove() then never allocates
    } catch (...) {
        size_ = 0;
        return false;
    }
    if (io_uring_register_files_sparse(&lp_->impl().ring(), size_) < 0) {
        size_ = 0;
        return false;
    }
    return true;
}

int file_table::add(int fd) noexcept {
    if (!tried_ && !create()) {
        return -1;
    }
    int s;
    if (!free_.empty()) {
        s = free_.back();
        free_.pop_back();
    } else if (next_ < size_) {
        s = static_cast<int>(next_++);
    } else {
        return -1; // full: the fd is used as it is
    }
    if (io_uring_register_files_update(&lp_->impl().ring(), static_cast<unsigned>(s), &fd, 1) !=
        1) {
        free_.push_back(s); // within the reserved capacity
        return -1;
    }
    ++used_;
    return s;
}

void file_table::remove(int slot) noexcept {
    int none = -1;
    (void)io_uring_register_files_update(&lp_->impl().ring(), static_cast<unsigned>(slot), &none,
                                         1);
    free_.push_back(slot);
    --used_;
}

} // namespace tether::detail
