#pragma once
// buffered_reader: reads a stream through a buffer; read_until, read_line, read_exact.

#include "net/io_errc.hpp"
#include "net/io_result.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>

namespace tether::net {

/// Reads a byte stream (`tcp_stream`, `unix_stream`, anything with `read_some`) through a
/// buffer, for protocols framed by delimiters: lines, headers.
///
/// The buffer grows on demand, from 4 KiB up to `max_size`; nothing is allocated before the
/// first read. Views returned by `read_until` and `read_line` point into it and stay valid
/// until the next call on the reader.
///
/// Cancellation: every read may be canceled by the awaiting task's context; bytes already
/// read stay in the buffer for the next call, so nothing is lost.
///
/// Lifetime: the stream is borrowed for the reader's lifetime, and the reader (`this`) until
/// each await resumes. One read at a time.
///
/// Example:
///
///     buffered_reader in(stream);
///     for (;;) {
///         result<std::string_view> line = co_await in.read_line();
///         if (!line) { break; } // io_errc::eof at the end
///         handle(*line);
///     }
template <class Stream>
class buffered_reader {
public:
    /// Reads from `s` with a buffer of at most `max_size` bytes (at least 16).
    explicit buffered_reader(Stream& s, std::size_t max_size = 64 * 1024) noexcept
        : s_(&s), max_(std::max<std::size_t>(max_size, 16)) {}

    /// Reads up to and including the first `delim` and returns it, delimiter included.
    ///
    /// At the end of the stream, returns what is left without a delimiter, if anything;
    /// then `io_errc::eof`.
    ///
    /// Errors: `io_errc::too_long` if `max_size` bytes hold no delimiter (they stay
    /// buffered: `buffered()` shows them, `consume()` drops them); read errors as the
    /// stream's.
    task<result<std::string_view>> read_until(char delim);

    /// Reads one line and returns it without its "\n" or "\r\n"; as `read_until('\n')`.
    task<result<std::string_view>> read_line();

    /// Returns buffered bytes if there are any, else reads from the stream into `buf`.
    task<result<std::size_t>> read_some(std::span<std::byte> buf);

    /// Fills `buf`, from the buffer first; returns the bytes read and, if it stopped short,
    /// why (`io_errc::eof`, a reset, or the context's error).
    task<io_result> read_exact(std::span<std::byte> buf);

    /// Returns the bytes read from the stream that no call has returned yet.
    std::span<const std::byte> buffered() const noexcept {
        return {reinterpret_cast<const std::byte*>(buf_.get()) + begin_, end_ - begin_};
    }
    /// Drops the first `n` buffered bytes (at most all of them).
    void consume(std::size_t n) noexcept { begin_ += std::min(n, end_ - begin_); }

    /// Returns the stream read from.
    Stream& stream() const noexcept { return *s_; }

private:
    // Makes room to read after the buffered bytes; false if the buffer is full at max_.
    bool make_room() {
        if (begin_ > 0 && begin_ == end_) {
            begin_ = end_ = 0;
        }
        if (end_ < cap_) {
            return true;
        }
        if (begin_ > 0) {
            std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0; // scanned_ counts from begin_: unchanged
            return true;
        }
        if (cap_ >= max_) {
            return false;
        }
        std::size_t cap = std::min(max_, cap_ == 0 ? std::size_t{4096} : cap_ * 2);
        auto bigger = std::make_unique_for_overwrite<char[]>(cap);
        if (end_ > 0) {
            std::memcpy(bigger.get(), buf_.get(), end_);
        }
        buf_ = std::move(bigger);
        cap_ = cap;
        return true;
    }
    std::span<std::byte> free_space() noexcept {
        return {reinterpret_cast<std::byte*>(buf_.get()) + end_, cap_ - end_};
    }

    Stream* s_;
    std::size_t max_;
    std::unique_ptr<char[]> buf_;
    std::size_t cap_ = 0;
    std::size_t begin_ = 0;   // first byte not returned yet
    std::size_t end_ = 0;     // one past the last byte read
    std::size_t scanned_ = 0; // bytes from begin_ known to hold no delimiter
};

// ---- implementation ----------------------------------------------------------------------

template <class Stream>
task<result<std::string_view>> buffered_reader<Stream>::read_until(char delim) {
    for (;;) {
        std::string_view have(buf_.get() + begin_, end_ - begin_);
        if (std::size_t i = have.find(delim, scanned_); i != std::string_view::npos) {
            begin_ += i + 1;
            scanned_ = 0;
            co_return have.substr(0, i + 1);
        }
        scanned_ = have.size();
        if (!make_room()) {
            co_return make_error_code(io_errc::too_long);
        }
        result<std::size_t> n = co_await s_->read_some(free_space());
        if (!n) {
            if (n.error() == io_errc::eof && end_ > begin_) {
                std::string_view rest(buf_.get() + begin_, end_ - begin_);
                begin_ = end_;
                scanned_ = 0;
                co_return rest;
            }
            co_return n.error();
        }
        end_ += *n;
    }
}

template <class Stream>
task<result<std::string_view>> buffered_reader<Stream>::read_line() {
    result<std::string_view> line = co_await read_until('\n');
    if (!line) {
        co_return line;
    }
    std::string_view l = *line;
    if (l.ends_with('\n')) {
        l.remove_suffix(1);
        if (l.ends_with('\r')) {
            l.remove_suffix(1);
        }
    }
    co_return l;
}

template <class Stream>
task<result<std::size_t>> buffered_reader<Stream>::read_some(std::span<std::byte> buf) {
    if (end_ > begin_ && !buf.empty()) {
        std::size_t n = std::min(buf.size(), end_ - begin_);
        std::memcpy(buf.data(), buf_.get() + begin_, n);
        begin_ += n;
        scanned_ = 0;
        co_return n;
    }
    co_return co_await s_->read_some(buf);
}

template <class Stream>
task<io_result> buffered_reader<Stream>::read_exact(std::span<std::byte> buf) {
    std::size_t n = std::min(buf.size(), end_ - begin_);
    if (n > 0) {
        std::memcpy(buf.data(), buf_.get() + begin_, n);
        begin_ += n;
        scanned_ = 0;
    }
    if (n == buf.size()) {
        co_return io_result{n, {}};
    }
    io_result rest = co_await s_->read_exact(buf.subspan(n));
    co_return io_result{n + rest.bytes, rest.error};
}

} // namespace tether::net
