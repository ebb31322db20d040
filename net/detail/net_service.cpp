#include "net/detail/net_service.hpp"

#include <memory>

namespace tether::net::detail {

namespace {
const char service_key = 0; // its address names net's service
} // namespace

net_service& net_service::of(tether::detail::loop_impl& l) {
    if (auto* s = l.service(&service_key)) {
        return static_cast<net_service&>(*s);
    }
    return static_cast<net_service&>(l.add_service(&service_key, std::make_unique<net_service>()));
}

net_service::~net_service() {
    while (head_) {
        release(head_);
    }
}

void net_service::keep(orphan* o) noexcept {
    o->orphan_prev = nullptr;
    o->orphan_next = head_;
    if (head_) {
        head_->orphan_prev = o;
    }
    head_ = o;
}

void net_service::release(orphan* o) noexcept {
    if (o->orphan_prev) {
        o->orphan_prev->orphan_next = o->orphan_next;
    } else {
        head_ = o->orphan_next;
    }
    if (o->orphan_next) {
        o->orphan_next->orphan_prev = o->orphan_prev;
    }
    delete o;
}

} // namespace tether::net::detail
