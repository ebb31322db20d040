#pragma once
// A loop's table of registered (fixed) files. An SQE that names a registered file
// (IOSQE_FIXED_FILE and its slot) spares the kernel the file reference (fget/fput, an atomic
// pair) it takes for every SQE on a plain fd.

#include <cstdint>
#include <vector>

namespace tether {
class loop;
} // namespace tether

namespace tether::detail {

/// A loop's sparse file table (io_uring_register_files_sparse, made on first use) and the
/// free list of its slots. The table takes its own reference to each file: a registered fd
/// stays an ordinary fd (options, adopt, release), but the socket stays open until its slot
/// is emptied, so an fd's owner calls remove() before it closes it. When the table is full,
/// or the kernel refuses, add() fails and the fd is used as it is.
///
/// Thread safety: the loop's thread (the ring takes registrations from it alone).
class file_table {
public:
    /// Slots at most: io_uring caps a table at 32768 (and RLIMIT_NOFILE applies).
    static constexpr unsigned max_size = 32768;

    /// `size` slots at most; 0: no table.
    file_table(loop& l, unsigned size) noexcept
        : lp_(&l), size_(size < max_size ? size : max_size) {}
    file_table(const file_table&) = delete;
    file_table& operator=(const file_table&) = delete;

    /// Registers `fd` and returns its slot, or -1 (no free slot, or the kernel refused).
    int add(int fd) noexcept;
    /// Empties `slot` (an update to -1) and frees it. Ops already issued on the slot keep
    /// the file until they complete.
    void remove(int slot) noexcept;
    /// Returns the slots in use.
    unsigned in_use() const noexcept { return used_; }

private:
    bool create() noexcept;

    loop* lp_;
    unsigned size_;
    bool tried_ = false; // create() ran (made the table, or failed and left size_ 0)
    unsigned used_ = 0;
    unsigned next_ = 0; // slots below have been handed out at least once
    std::vector<int> free_;
};

} // namespace tether::detail
