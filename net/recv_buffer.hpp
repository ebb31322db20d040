#pragma once
// recv_buffer: bytes a stream received, in a buffer lent by the loop's pool.

#include "net/detail/recv_ring.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>

namespace tether::net {

namespace detail {
class receive_awaiter;
}

/// Bytes a stream received (`stream_socket::receive`), in a buffer lent by the loop's
/// buffer pool: no copy between the kernel and the caller.
///
/// Move-only. Destroying it, or `reset()`, gives the buffer back to the pool for the kernel
/// to fill again: hold it as long as the bytes are needed and no longer (sending them
/// straight back, `write_all(b.data())`, is fine).
///
/// Thread safety: destroy it on the loop that received it, before that loop ends.
class recv_buffer {
public:
    /// Makes an empty buffer.
    recv_buffer() noexcept = default;
    recv_buffer(recv_buffer&& o) noexcept
        : pool_(std::exchange(o.pool_, nullptr)), data_(std::exchange(o.data_, nullptr)),
          size_(std::exchange(o.size_, 0)), bid_(std::exchange(o.bid_, -1)) {}
    recv_buffer& operator=(recv_buffer&& o) noexcept {
        if (this != &o) {
            reset();
            pool_ = std::exchange(o.pool_, nullptr);
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
            bid_ = std::exchange(o.bid_, -1);
        }
        return *this;
    }
    recv_buffer(const recv_buffer&) = delete;
    recv_buffer& operator=(const recv_buffer&) = delete;
    /// Returns the buffer to its pool.
    ~recv_buffer() { reset(); }

    /// Returns the bytes received.
    std::span<const std::byte> data() const noexcept { return {data_, size_}; }
    /// Returns the bytes received, as characters.
    std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }
    /// Returns how many bytes were received (at least 1 for a buffer from `receive`).
    std::size_t size() const noexcept { return size_; }
    /// Returns true if the buffer holds nothing (default-constructed, moved from, reset).
    bool empty() const noexcept { return size_ == 0; }

    /// Gives the buffer back to the pool now; the object becomes empty.
    void reset() noexcept {
        if (data_ != nullptr) {
            detail::release_buffer(pool_, bid_, data_);
            pool_ = nullptr;
            data_ = nullptr;
            size_ = 0;
            bid_ = -1;
        }
    }

private:
    friend class detail::receive_awaiter;
    recv_buffer(detail::buffer_ring* pool, std::int32_t bid, std::byte* data,
                std::uint32_t size) noexcept
        : pool_(pool), data_(data), size_(size), bid_(bid) {}

    detail::buffer_ring* pool_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::int32_t bid_ = -1;
};

} // namespace tether::net
