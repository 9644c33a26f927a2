#include "engine/engine_runner.h"

#include <fcntl.h>

#include "engine/cli.h"

namespace odyssey::engine {

Result<int> EngineRunner::Run(const handlers::ServiceCall& call) {
  auto client = ConnectOrStart(connect_);
  if (!client.ok()) return client.error();
  UniqueFd null_in, null_out;
  CallArgs args;
  args.service = call.service;
  args.service_arg = call.argument;
  if (call.target.kind == handlers::Target::Kind::kNamed) args.vm = call.target.name;
  else args.template_name = call.target.name;
  // Viewers and browsers show their windows on the user's display (when there is one).
  args.gui = call.service == "qubes.OpenInVM" || call.service == "qubes.OpenURL";
  if (call.stdin_fd < 0) null_in.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (call.stdout_fd < 0) null_out.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  args.stdin_fd = call.stdin_fd >= 0 ? call.stdin_fd : null_in.get();
  args.stdout_fd = call.stdout_fd >= 0 ? call.stdout_fd : null_out.get();
  args.stderr_fd = call.stderr_fd >= 0 ? call.stderr_fd : 2;
  CallOutcome o = CallInDisposable(*client, args);
  if (!o.error.empty()) return Error{o.error, o.name.empty() ? EPERM : EIO};
  return o.exit_code;
}

}  // namespace odyssey::engine
