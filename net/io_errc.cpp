#include "net/io_errc.hpp"

#include <string>

namespace tether::net {

namespace {

class io_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tether.net"; }
    std::string message(int v) const override {
        switch (static_cast<io_errc>(v)) {
        case io_errc::eof:
            return "end of stream";
        case io_errc::closed:
            return "socket closed";
        case io_errc::too_long:
            return "no delimiter within the read limit";
        }
        return "unknown tether.net error";
    }
};

} // namespace

const std::error_category& io_category() noexcept {
    static const io_category_impl c;
    return c;
}

} // namespace tether::net
