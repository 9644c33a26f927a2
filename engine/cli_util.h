// Helpers shared by the CLI's client-side commands (cli.cc) and its handlers commands
// (cli_handlers.cc): error printing, single-reply requests, captured calls, tables.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "engine/cli.h"

namespace odyssey::engine::cli_detail {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Prints "odyssey: MSG" to stderr; returns 1.
int Fail(const std::string& msg);
Result<AdminClient> Connect(const CliContext& ctx);
// Sends a single-reply request; prints the error and returns nullopt on failure.
std::optional<json> Ask(const CliContext& ctx, const json& req);
std::string Mib(uint64_t bytes);
// Reads fd to EOF into *out (capped) on a thread.
std::thread Drain(UniqueFd fd, std::string* out);

struct Pipe {
  UniqueFd read, write;
  static Result<Pipe> Make() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Error::Errno("pipe2");
    return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
  }
};

// A call whose stdout/stderr are captured; stdin_fd is sent as is.
struct Captured {
  CallOutcome outcome;
  std::string out, err;
};
Result<Captured> CallCaptured(AdminClient& client, CallArgs args, int stdin_fd);
void PrintTable(const std::vector<std::vector<std::string>>& rows);
// j[key] as text ("" when missing).
std::string Str(const json& j, const char* key);

}  // namespace odyssey::engine::cli_detail
