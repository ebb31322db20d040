#include "net/buffered_reader.hpp"
#include "runtime/loop.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <deque>
#include <string>
#include <vector>

using namespace tether;
using namespace tether::net;

namespace {

// A stream that returns scripted chunks, one per read_some, then EOF: every split of the
// input is reachable.
struct script_stream {
    std::deque<std::string> chunks;
    int reads = 0;

    task<result<std::size_t>> read_some(std::span<std::byte> buf) {
        ++reads;
        if (chunks.empty()) {
            co_return make_error_code(io_errc::eof);
        }
        std::string& c = chunks.front();
        std::size_t n = std::min(buf.size(), c.size());
        std::memcpy(buf.data(), c.data(), n);
        c.erase(0, n);
        if (c.empty()) {
            chunks.pop_front();
        }
        co_return n;
    }
    task<io_result> read_exact(std::span<std::byte> buf) {
        std::size_t got = 0;
        while (got < buf.size()) {
            result<std::size_t> n = co_await read_some(buf.subspan(got));
            if (!n) {
                co_return io_result{got, n.error()};
            }
            got += *n;
        }
        co_return io_result{got, {}};
    }
};

task<std::vector<std::string>> lines(buffered_reader<script_stream>* in) {
    std::vector<std::string> out;
    for (;;) {
        result<std::string_view> l = co_await in->read_line();
        if (!l) {
            CHECK(l.error() == io_errc::eof);
            co_return out;
        }
        out.emplace_back(*l);
    }
}

} // namespace

TEST_CASE("read_line finds lines however the stream splits them") {
    loop l;
    script_stream s{{"he", "llo\r", "\nwor", "ld\n\nlast"}};
    buffered_reader in(s);
    std::vector<std::string> want{"hello", "world", "", "last"};
    CHECK(l.block_on(lines(&in)) == want);
}

TEST_CASE("read_until returns the delimiter with the data, and the rest at EOF") {
    loop l;
    script_stream s{{"a;bb;", "ccc"}};
    buffered_reader in(s);
    struct d {
        static task<std::string> run(buffered_reader<script_stream>* in) {
            std::string out;
            for (;;) {
                result<std::string_view> part = co_await in->read_until(';');
                if (!part) {
                    CHECK(part.error() == io_errc::eof);
                    co_return out;
                }
                out += "<" + std::string(*part) + ">";
            }
        }
    };
    CHECK(l.block_on(d::run(&in)) == "<a;><bb;><ccc>");
}

TEST_CASE("a line longer than the limit is too_long and stays buffered") {
    loop l;
    script_stream s{{std::string(40, 'x'), "\nnext\n"}};
    buffered_reader in(s, 32);
    struct d {
        static task<void> run(buffered_reader<script_stream>* in) {
            result<std::string_view> r = co_await in->read_line();
            CHECK(r.error() == io_errc::too_long);
            CHECK(in->buffered().size() == 32);
            in->consume(32);
            result<std::string_view> rest = co_await in->read_line();
            REQUIRE(rest);
            CHECK(*rest == "xxxxxxxx");
            result<std::string_view> next = co_await in->read_line();
            REQUIRE(next);
            CHECK(*next == "next");
        }
    };
    l.block_on(d::run(&in));
}

TEST_CASE("read_exact and read_some take buffered bytes first") {
    loop l;
    script_stream s{{"line\nBODY", "-more", "!"}};
    buffered_reader in(s);
    struct d {
        static task<std::string> run(buffered_reader<script_stream>* in) {
            result<std::string_view> line = co_await in->read_line();
            REQUIRE(line);
            CHECK(*line == "line");
            std::string body(9, '\0');
            io_result r = co_await in->read_exact(std::as_writable_bytes(std::span(body)));
            CHECK(r.bytes == 9);
            CHECK_FALSE(r.error);
            std::array<std::byte, 8> buf;
            result<std::size_t> n = co_await in->read_some(buf);
            REQUIRE(n);
            std::string tail(reinterpret_cast<const char*>(buf.data()), *n);
            io_result end = co_await in->read_exact(buf);
            CHECK(end.bytes == 0);
            CHECK(end.error == io_errc::eof);
            co_return body + tail;
        }
    };
    CHECK(l.block_on(d::run(&in)) == "BODY-more!");
}

TEST_CASE("a reader allocates nothing before its first read, and reads in few calls") {
    loop l;
    script_stream s{{std::string(10000, 'y') + "\n"}};
    buffered_reader in(s);
    CHECK(in.buffered().empty());
    struct d {
        static task<std::size_t> run(buffered_reader<script_stream>* in) {
            result<std::string_view> r = co_await in->read_line();
            REQUIRE(r);
            co_return r->size();
        }
    };
    CHECK(l.block_on(d::run(&in)) == 10000);
    CHECK(s.reads <= 4); // 4 KiB, 8 KiB, 16 KiB: the buffer doubles
}
