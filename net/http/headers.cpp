#include "net/http/headers.hpp"

#include "net/http/detail/put.hpp"
#include "net/http/parser.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <stdexcept>

namespace tether::http {

header_map::header_map(const header_map& o)
    : fields_(o.fields_), buf_(o.size_ != 0 ? new char[o.size_] : nullptr), size_(o.size_),
      cap_(o.size_), names_(o.names_) {
    if (size_ != 0) {
        std::memcpy(buf_.get(), o.buf_.get(), size_);
    }
}

header_map& header_map::operator=(const header_map& o) {
    if (this != &o) {
        header_map copy(o);
        *this = std::move(copy);
    }
    return *this;
}

header_map::header_map(header_map&& o) noexcept
    : fields_(std::move(o.fields_)), buf_(std::move(o.buf_)), size_(o.size_), cap_(o.cap_),
      names_(o.names_) {
    o.fields_.clear();
    o.size_ = 0;
    o.cap_ = 0;
    o.names_ = 0;
}

header_map& header_map::operator=(header_map&& o) noexcept {
    if (this != &o) {
        fields_ = std::move(o.fields_);
        buf_ = std::move(o.buf_);
        size_ = o.size_;
        cap_ = o.cap_;
        names_ = o.names_;
        o.fields_.clear();
        o.size_ = 0;
        o.cap_ = 0;
        o.names_ = 0;
    }
    return *this;
}

const header_map::entry* header_map::find_slow(std::string_view name) const noexcept {
    for (const entry& e : fields_) {
        if (e.name_len == name.size() &&
            detail::iequals_n(buf_.get() + e.at, name.data(), name.size())) {
            return &e;
        }
    }
    return nullptr;
}

bool header_map::inside(std::string_view v) const noexcept {
    const char* b = buf_.get();
    std::less_equal<const char*> le;
    return !v.empty() && b != nullptr && le(b, v.data()) && !le(b + size_, v.data());
}

void header_map::replace(std::string_view name, std::string_view value) {
    // `name` or `value` may be bytes of the fields about to be moved or removed.
    if (inside(name) || inside(value)) {
        std::string copy;
        copy.reserve(name.size() + value.size());
        copy.append(name).append(value);
        replace(std::string_view(copy).substr(0, name.size()),
                std::string_view(copy).substr(name.size()));
        return;
    }
    erase_named(name);
    append(name, value);
}

void header_map::add(std::string_view name, std::string_view value) {
    append(name, value);
}

void header_map::append_slow(std::string_view name, std::string_view value) {
    // Offsets are 32 bits: a map holds up to 4 GiB of fields. (The sum can't wrap: both
    // sizes are of objects in memory.)
    constexpr std::size_t max = std::numeric_limits<std::uint32_t>::max();
    const std::size_t need = name.size() + value.size() + 4;
    if (need > max - size_) [[unlikely]] {
        throw std::length_error("http::header_map: fields too large");
    }
    // Grows (moving the bytes): `name` or `value` may point into the old buffer, which
    // stays alive in `old` until append() below has copied them.
    std::unique_ptr<char[]> old;
    if (cap_ - size_ < need) {
        std::size_t cap =
            std::max<std::size_t>({std::size_t{size_} + need, 2 * std::size_t{cap_}, 256});
        cap = std::min(cap, max);
        std::unique_ptr<char[]> bigger(new char[cap]);
        if (size_ != 0) {
            std::memcpy(bigger.get(), buf_.get(), size_);
        }
        old = std::exchange(buf_, std::move(bigger));
        cap_ = static_cast<std::uint32_t>(cap);
    }
    if (fields_.size() == fields_.capacity()) {
        fields_.reserve(std::max<std::size_t>(8, 2 * fields_.capacity()));
    }
    append(name, value); // now the inline path has room for both
}

std::optional<std::string_view> header_map::get(std::string_view name) const noexcept {
    if (const entry* e = find(name)) {
        return std::string_view(buf_.get() + e->at + e->name_len + 2, e->value_len);
    }
    return std::nullopt;
}

void header_map::remove(std::string_view name) {
    if (find(name) != nullptr) {
        if (inside(name)) {
            std::string copy(name);
            erase_named(copy);
        } else {
            erase_named(name);
        }
    }
}

void header_map::erase_named(std::string_view name) {
    // Moves the fields that stay down over the removed ones: wire() stays exact.
    char* b = buf_.get();
    std::uint32_t to = 0;
    std::size_t kept = 0;
    names_ = 0;
    for (const entry& e : fields_) {
        const std::uint32_t len = e.name_len + e.value_len + 4;
        if (e.name_len == name.size() && detail::iequals_n(b + e.at, name.data(), name.size())) {
            continue;
        }
        if (e.at != to) {
            std::memmove(b + to, b + e.at, len);
        }
        fields_[kept++] = entry{to, e.name_len, e.value_len};
        names_ |= name_bit(std::string_view(b + to, e.name_len));
        to += len;
    }
    fields_.resize(kept);
    size_ = to;
}

namespace {

// How most responses start, "HTTP/1.1 200 OK\r\nDate: " then the date and CRLF, made at most
// once per second per thread; http_date() is the date in it.
struct date_lines {
    std::time_t last;
    std::size_t date_len; // no strlen
    char line[64];
};
constexpr std::string_view ok_line = "HTTP/1.1 200 OK\r\nDate: ";

// initial-exec: libtether is linked, not dlopen'ed, so this is read at a fixed offset from
// the thread pointer instead of through __tls_get_addr (once per response).
[[gnu::tls_model("initial-exec")]] constinit thread_local date_lines dates{};

[[gnu::noinline]] void format_dates(date_lines& d, std::time_t now) noexcept {
    d.last = now;
    std::tm tm{};
    gmtime_r(&now, &tm);
    // By hand: strftime's %a and %b follow the locale, HTTP dates never do.
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::memcpy(d.line, ok_line.data(), ok_line.size());
    char* date = d.line + ok_line.size();
    const std::size_t room = sizeof d.line - ok_line.size() - 2; // and CRLF
    const int n = std::snprintf(date, room, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                                tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                                tm.tm_min, tm.tm_sec);
    d.date_len = n < 0 ? 0 : std::min(static_cast<std::size_t>(n), room - 1);
    std::memcpy(date + d.date_len, "\r\n", 2);
}

inline const date_lines& current_dates() noexcept {
    const std::time_t now = std::time(nullptr);
    if (now != dates.last) [[unlikely]] {
        format_dates(dates, now);
    }
    return dates;
}

} // namespace

std::string_view http_date() noexcept {
    const date_lines& d = current_dates();
    return std::string_view(d.line + ok_line.size(), d.date_len);
}

std::string_view detail::ok_status_and_date() noexcept {
    const date_lines& d = current_dates();
    return std::string_view(d.line, ok_line.size() + d.date_len + 2);
}

} // namespace tether::http
