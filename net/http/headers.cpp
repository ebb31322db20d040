#include "net/http/headers.hpp"

#include "net/http/parser.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace tether::http {

void header_map::set(std::string_view name, std::string_view value) {
    // Usually the name is new: one look, no erase.
    auto named = [&](const auto& f) { return iequals(f.first, name); };
    auto it = std::find_if(fields_.begin(), fields_.end(), named);
    if (it != fields_.end()) {
        fields_.erase(std::remove_if(it, fields_.end(), named), fields_.end());
    }
    fields_.emplace_back(name, value);
}

void header_map::add(std::string_view name, std::string_view value) {
    fields_.emplace_back(name, value);
}

std::optional<std::string_view> header_map::get(std::string_view name) const noexcept {
    for (const auto& [k, v] : fields_) {
        if (iequals(k, name)) {
            return std::string_view(v);
        }
    }
    return std::nullopt;
}

void header_map::remove(std::string_view name) {
    std::erase_if(fields_, [&](const auto& f) { return iequals(f.first, name); });
}

std::string_view http_date() noexcept {
    // initial-exec: libtether is linked, not dlopen'ed, so these are read at a fixed offset
    // from the thread pointer instead of through __tls_get_addr (once per response).
    [[gnu::tls_model("initial-exec")]] constinit thread_local std::time_t last = 0;
    [[gnu::tls_model("initial-exec")]] constinit thread_local char buf[32] = {};
    std::time_t now = std::time(nullptr);
    if (now != last) {
        last = now;
        std::tm tm{};
        gmtime_r(&now, &tm);
        // By hand: strftime's %a and %b follow the locale, HTTP dates never do.
        static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                      tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                      tm.tm_sec);
    }
    return buf;
}

} // namespace tether::http
