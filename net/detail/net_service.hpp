#pragma once
// net_service: what net/ keeps per loop. Included by net .cpp files only.

#include "runtime/detail/loop_impl.hpp"

namespace tether::net::detail {

/// An object whose owner let go while the kernel still holds one of its operations (a closed
/// listener's multishot accept): it frees itself when the last CQE arrives, or with the loop.
struct orphan {
    virtual ~orphan() = default;
    orphan* orphan_prev = nullptr;
    orphan* orphan_next = nullptr;
};

/// net/'s per-loop state: the orphans waiting for their last CQE.
class net_service final : public tether::detail::loop_service {
public:
    /// Returns the loop's service, creating it on first use (loop thread).
    static net_service& of(tether::detail::loop_impl& l);

    net_service() = default;
    net_service(const net_service&) = delete;
    net_service& operator=(const net_service&) = delete;
    /// Frees the orphans left (the ring is about to go, and their CQEs with it).
    ~net_service() override;

    /// Keeps `o` until `release(o)` or the end of the loop.
    void keep(orphan* o) noexcept;
    /// Forgets and deletes `o`.
    void release(orphan* o) noexcept;

private:
    orphan* head_ = nullptr;
};

} // namespace tether::net::detail
