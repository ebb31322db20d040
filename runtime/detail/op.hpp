#pragma once
// An io_uring operation awaited by a coroutine. liburing stays in the .cpp files: an op
// prepares its SQE through a function pointer that receives it as void*.

#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"

#include <coroutine>
#include <cstdint>

namespace tether::detail {

/// What the loop calls for each CQE: user_data points at a completion.
struct completion {
    void (*complete)(completion*, int res, std::uint32_t flags) noexcept;

    completion() noexcept : complete(nullptr) {}
    constexpr explicit completion(void (*fn)(completion*, int, std::uint32_t) noexcept) noexcept
        : complete(fn) {}
    /// Leaves `complete` uninitialized: set before the SQE is queued.
    explicit completion(lazy_init_t) noexcept {}
};

/// The user_data of an SQE whose CQE needs no handling (an ASYNC_CANCEL's, a timeout
/// update's: the target's own CQE is what matters); its handler does nothing. A completion
/// like any other, so that the reap loop calls each CQE's handler without a test (loop.cpp).
extern constinit completion ignored_cqe;

struct uring_op;

/// What an op's general path uses and its common paths do not (a stream's reads and writes
/// prepare their SQE inline and take no flags from their CQE): the first base of uring_op,
/// before its waiter's cold part, so that those fields stay out of the lines an await touches
/// (see waiter).
struct uring_op_extra {
    void (*prep)(uring_op*, void* sqe) noexcept;
    std::uint32_t cqe_flags;
};

/// One SQE awaited by one coroutine, canceled in the kernel (IORING_OP_ASYNC_CANCEL) when
/// its context is done; the coroutine resumes only when the operation's own CQE arrives,
/// so buffers lent to the kernel stay alive until then.
///
/// Layout: `prep` and `cqe_flags`, the waiter (its cold fields, then those every await
/// touches), the completion, `res`, then what a derived op adds: from the waiter's armed
/// flag on, what a read or write touches is contiguous.
struct uring_op : uring_op_extra, waiter, completion {
    int res;

    uring_op() noexcept : uring_op_extra{nullptr, 0}, res(0) {}
    /// See waiter(lazy_init_t) and completion(lazy_init_t): `lp`, `handle`, `on_cancel`,
    /// `owner` and `complete` are set before arm(). Leaves `prep` (set before start()), `res`
    /// and `cqe_flags` (set with the CQE) uninitialized too: whoever reads `res` of an op
    /// that never went to the kernel sets it.
    explicit uring_op(lazy_init_t) noexcept : waiter(lazy_init), completion(lazy_init) {}

    /// Submits the op under `c` for coroutine `h`; returns false if it must not suspend
    /// (the context was already done: `error` says why, nothing was submitted).
    bool start(const context& c, std::coroutine_handle<> h) noexcept;
    /// Returns the op's result: res >= 0, or the error (the context's reason for a CQE
    /// canceled by it).
    result<int> outcome() const noexcept;
};

} // namespace tether::detail
