// qrexec-policy SOURCE TARGET SERVICE+ARG: decides one call and explains it.
// Exit status: 0 allow, 1 deny, 2 ask needed (--just-evaluate), 3 setup error.
#include <cstdio>

#include "qrexec/policy/options_common.h"
#include "qrexec/policy/policy.h"

using namespace odyssey::qrexec::policy;

int main(int argc, char** argv) {
  CLI::App app{
      "Decide one qrexec call with the policy.d rules and print the decision and the matching rule "
      "as file:line.\nExit status: 0 allow, 1 deny, 2 ask needed (with --just-evaluate), 3 setup error."};
  std::string source, target, service_and_arg;
  CommonFlags flags;
  DecideFlags decide;
  app.add_option("SOURCE", source, "calling domain (name or uuid:U)")->required();
  app.add_option("TARGET", target, "intended target (name, uuid:U, @adminvm, @default, @dispvm, @dispvm:NAME)")
      ->required();
  app.add_option("SERVICE+ARG", service_and_arg, "service name and argument, e.g. qubes.OpenURL+")->required();
  app.add_flag("--just-evaluate", decide.just_evaluate, "do not prompt: report 'ask' (exit 2) instead");
  app.add_flag("--assume-yes-for-ask", decide.assume_yes_for_ask, "treat 'ask' rules as 'allow'");
  flags.Add(app);
  CLI11_PARSE(app, argc, argv);

  auto service = flags.MakeService("qrexec-policy");
  if (!service) return 3;
  PolicyPtr policy = service->CurrentPolicy();
  if (!policy->ok()) std::fprintf(stderr, "qrexec-policy: policy error (everything is denied): %s\n", policy->error().c_str());
  Decision d = service->Decide({source, target, service_and_arg}, decide);
  std::printf("result=%s\n", std::string(ActionName(d.action)).c_str());
  if (!d.target.empty()) std::printf("target=%s\n", d.target.c_str());
  if (!d.target_uuid.empty()) std::printf("target_uuid=%s\n", d.target_uuid.c_str());
  if (!d.default_target.empty()) std::printf("default_target=%s\n", d.default_target.c_str());
  if (!d.user.empty()) std::printf("user=%s\n", d.user.c_str());
  if (d.action != Action::kDeny) std::printf("autostart=%s\n", d.autostart ? "True" : "False");
  if (d.notify) std::printf("notify=yes\n");
  std::printf("rule=%s\n", d.rule.ToString().c_str());
  std::printf("reason=%s\n", d.reason.c_str());
  if (d.action == Action::kDeny && d.reason.rfind("ask denied", 0) == 0)
    std::fprintf(stderr, "qrexec-policy: notice: %s\n", d.reason.c_str());
  switch (d.action) {
    case Action::kAllow: return 0;
    case Action::kAsk: return 2;
    case Action::kDeny: return 1;
  }
  return 1;
}
