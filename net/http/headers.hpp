#pragma once
// header_map: response (and client request) header fields, case-insensitive by name.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tether::http {

namespace detail {
/// Copies n bytes, W <= n <= 2W, as two possibly overlapping W-byte moves: the first and
/// the last W bytes, each loaded before it is stored.
template <std::size_t W>
inline void copy_ends(char* p, const char* q, std::size_t n) noexcept {
    if constexpr (W == 32) {
        // As four 16-byte values: GCC keeps a 32-byte array on the stack, a store and a load
        // more for each half.
        using v16 = char __attribute__((vector_size(16)));
        v16 a0;
        v16 a1;
        v16 b0;
        v16 b1;
        std::memcpy(&a0, q, 16);
        std::memcpy(&a1, q + 16, 16);
        std::memcpy(&b0, q + n - 32, 16);
        std::memcpy(&b1, q + n - 16, 16);
        std::memcpy(p, &a0, 16);
        std::memcpy(p + 16, &a1, 16);
        std::memcpy(p + n - 32, &b0, 16);
        std::memcpy(p + n - 16, &b1, 16);
    } else {
        char a[W];
        char b[W];
        std::memcpy(a, q, W);
        std::memcpy(b, q + n - W, W);
        std::memcpy(p, a, W);
        std::memcpy(p + n - W, b, W);
    }
}

/// Copies `s` to `p` and returns the end. Up to 32 bytes (names, values, IDs, addresses)
/// take two overlapping loads and stores instead of a call to memcpy.
[[gnu::always_inline]] inline char* put_short(char* p, std::string_view s) noexcept {
    const char* q = s.data();
    const std::size_t n = s.size();
    if (n >= 16 && n <= 32) {
        copy_ends<16>(p, q, n);
    } else if (n >= 8 && n < 16) {
        copy_ends<8>(p, q, n);
    } else if (n >= 4 && n < 8) {
        copy_ends<4>(p, q, n);
    } else if (n > 0 && n < 4) {
        p[0] = q[0];
        p[n / 2] = q[n / 2];
        p[n - 1] = q[n - 1];
    } else if (n > 32) {
        std::memcpy(p, q, n);
    }
    return p + n;
}

} // namespace detail

/// Header fields in insertion order; names compare without case, values are kept as given.
///
/// The fields are kept as they go on the wire, `Name: value\r\n` after one another in one
/// buffer (`wire()`), which keeps its capacity across `clear()`: a map reused for one
/// response after another (the server's) allocates nothing per field, and a response head
/// copies its fields in one piece.
class header_map {
    struct entry {
        std::uint32_t at;        // offset of the name in the buffer
        std::uint32_t name_len;  // the value starts at at + name_len + 2 (after ": ")
        std::uint32_t value_len; // the field takes name_len + value_len + 4 bytes
    };

public:
    /// One field: `first` is the name, `second` the value.
    using value_type = std::pair<std::string_view, std::string_view>;

    /// Iterates the fields in order, giving each as a `value_type` (views into the map).
    class const_iterator {
    public:
        using iterator_category = std::random_access_iterator_tag;
        using value_type = header_map::value_type;
        using difference_type = std::ptrdiff_t;
        using reference = value_type;
        struct pointer {
            value_type v;
            const value_type* operator->() const noexcept { return &v; }
        };

        const_iterator() noexcept = default;
        value_type operator*() const noexcept {
            return {std::string_view(buf_ + e_->at, e_->name_len),
                    std::string_view(buf_ + e_->at + e_->name_len + 2, e_->value_len)};
        }
        pointer operator->() const noexcept { return {**this}; }
        value_type operator[](difference_type n) const noexcept { return *(*this + n); }
        const_iterator& operator++() noexcept {
            ++e_;
            return *this;
        }
        const_iterator operator++(int) noexcept {
            const_iterator t = *this;
            ++e_;
            return t;
        }
        const_iterator& operator--() noexcept {
            --e_;
            return *this;
        }
        const_iterator operator--(int) noexcept {
            const_iterator t = *this;
            --e_;
            return t;
        }
        const_iterator& operator+=(difference_type n) noexcept {
            e_ += n;
            return *this;
        }
        const_iterator& operator-=(difference_type n) noexcept {
            e_ -= n;
            return *this;
        }
        friend const_iterator operator+(const_iterator i, difference_type n) noexcept {
            return i += n;
        }
        friend const_iterator operator+(difference_type n, const_iterator i) noexcept {
            return i += n;
        }
        friend const_iterator operator-(const_iterator i, difference_type n) noexcept {
            return i -= n;
        }
        friend difference_type operator-(const const_iterator& a,
                                         const const_iterator& b) noexcept {
            return a.e_ - b.e_;
        }
        friend bool operator==(const const_iterator& a, const const_iterator& b) noexcept {
            return a.e_ == b.e_;
        }
        friend auto operator<=>(const const_iterator& a, const const_iterator& b) noexcept {
            return a.e_ <=> b.e_;
        }

    private:
        friend class header_map;
        const_iterator(const char* buf, const entry* e) noexcept : buf_(buf), e_(e) {}
        const char* buf_ = nullptr;
        const entry* e_ = nullptr;
    };
    using iterator = const_iterator;

    header_map() noexcept = default;
    header_map(const header_map& o);
    header_map& operator=(const header_map& o);
    header_map(header_map&& o) noexcept;
    header_map& operator=(header_map&& o) noexcept;
    ~header_map() = default;

    /// Replaces every field named `name` with one holding `value`, added last.
    void set(std::string_view name, std::string_view value) {
        // Usually the name is new: one test of a mask.
        if (find(name) == nullptr) {
            append(name, value);
        } else {
            replace(name, value);
        }
    }
    /// Adds a field, keeping existing ones of the same name.
    void add(std::string_view name, std::string_view value);
    /// Returns the first value of `name`, or nullopt.
    ///
    /// Lifetime: the view is valid until the map is next changed.
    std::optional<std::string_view> get(std::string_view name) const noexcept;
    /// Returns true if a field named `name` exists.
    [[gnu::always_inline]] bool has(std::string_view name) const noexcept {
        return find(name) != nullptr;
    }
    /// Removes every field named `name`.
    void remove(std::string_view name);
    /// Removes every field; the storage is kept for the next ones.
    void clear() noexcept {
        fields_.clear();
        size_ = 0;
        names_ = 0;
    }
    bool empty() const noexcept { return fields_.empty(); }
    /// Returns the number of fields.
    std::size_t size() const noexcept { return fields_.size(); }

    /// Returns the fields as a message head carries them: `Name: value\r\n` for each, in
    /// order (empty if there are none).
    ///
    /// Lifetime: the view is valid until the map is next changed.
    std::string_view wire() const noexcept { return {buf_.get(), size_}; }

    const_iterator begin() const noexcept { return {buf_.get(), fields_.data()}; }
    const_iterator end() const noexcept { return {buf_.get(), fields_.data() + fields_.size()}; }

private:
    // One of 64 bits for a name, from its length and its first and last letters in any
    // case: a lookup of a name whose bit no field has set is over at once.
    static std::uint64_t name_bit(std::string_view name) noexcept {
        if (name.empty()) {
            return 1;
        }
        const unsigned first = static_cast<unsigned char>(name.front()) | 0x20u;
        const unsigned last = static_cast<unsigned char>(name.back()) | 0x20u;
        return std::uint64_t{1} << ((name.size() * 5 + first * 3 + last) & 63);
    }
    [[gnu::always_inline]] const entry* find(std::string_view name) const noexcept {
        if ((names_ & name_bit(name)) == 0) {
            return nullptr;
        }
        return find_slow(name);
    }
    const entry* find_slow(std::string_view name) const noexcept;
    bool inside(std::string_view v) const noexcept; // v points into buf_
    void replace(std::string_view name, std::string_view value);
    void append(std::string_view name, std::string_view value) {
        // The common case inline: the buffer has room (it keeps its capacity across clear()).
        const std::size_t need = name.size() + value.size() + 4;
        if (cap_ - size_ < need || fields_.size() == fields_.capacity()) {
            append_slow(name, value);
            return;
        }
        fields_.push_back(entry{size_, static_cast<std::uint32_t>(name.size()),
                                static_cast<std::uint32_t>(value.size())});
        // Names and values are short: copied without calls to memcpy.
        char* p = detail::put_short(buf_.get() + size_, name);
        std::memcpy(p, ": ", 2);
        p = detail::put_short(p + 2, value);
        std::memcpy(p, "\r\n", 2);
        size_ += static_cast<std::uint32_t>(need);
        names_ |= name_bit(name);
    }
    void append_slow(std::string_view name, std::string_view value);
    void erase_named(std::string_view name);

    std::vector<entry> fields_;
    std::unique_ptr<char[]> buf_; // the fields' wire form; size_ bytes used of cap_
    std::uint32_t size_ = 0;
    std::uint32_t cap_ = 0;
    std::uint64_t names_ = 0; // name_bit() of every field's name
};

/// Returns the current time as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT"), formatted at
/// most once per second per thread.
std::string_view http_date() noexcept;

namespace detail {
/// Returns "HTTP/1.1 200 OK\r\nDate: ", `http_date()` and CRLF: how most response heads
/// start, made with the date (at most once per second per thread).
///
/// Lifetime: valid on this thread until its next call or `http_date()`.
std::string_view ok_status_and_date() noexcept;
} // namespace detail

} // namespace tether::http
