// Policy socket protocol: strict request parsing and the exact reply lines.
#include "qrexec/policy/daemon_protocol.h"

#include <gtest/gtest.h>

namespace odyssey::qrexec::policy {
namespace {

TEST(SocketRequest, ParsesMinimal) {
  auto r = ParseSocketRequest("source=work\nintended_target=vault\nservice_and_arg=qubes.Foo+x\n\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->request.source, "work");
  EXPECT_EQ(r->request.intended_target, "vault");
  EXPECT_EQ(r->request.service_and_arg, "qubes.Foo+x");
  EXPECT_FALSE(r->flags.just_evaluate);
  EXPECT_FALSE(r->flags.assume_yes_for_ask);
}

TEST(SocketRequest, ParsesAllKeys) {
  auto r = ParseSocketRequest(
      "domain_id=12\nsource=work\nintended_target=@default\nservice_and_arg=qubes.Foo+\nprocess_ident=0 12\n"
      "assume_yes_for_ask=yes\njust_evaluate=yes\nrequested_source=work\n\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->domain_id, "12");
  EXPECT_EQ(r->process_ident, "0 12");
  EXPECT_EQ(r->requested_source, "work");
  EXPECT_TRUE(r->flags.just_evaluate);
  EXPECT_TRUE(r->flags.assume_yes_for_ask);
}

TEST(SocketRequest, EmptyValuesAllowedForTarget) {
  auto r = ParseSocketRequest("source=work\nintended_target=\nservice_and_arg=a+\n\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->request.intended_target, "");
}

struct BadRequest {
  std::string bytes;
  const char* message;
};

class BadSocketRequestTest : public ::testing::TestWithParam<BadRequest> {};

TEST_P(BadSocketRequestTest, Refused) {
  auto r = ParseSocketRequest(GetParam().bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, GetParam().message);
}

const std::string kOk = "source=a\nintended_target=b\nservice_and_arg=c+\n";

INSTANTIATE_TEST_SUITE_P(
    Policy, BadSocketRequestTest,
    ::testing::Values(
        BadRequest{"", "truncated request (no blank line)"},
        BadRequest{"source=a\n", "truncated request (no blank line)"},
        BadRequest{"\n", "missing source="},
        BadRequest{"source=a\n\n", "missing intended_target="},
        BadRequest{"source=a\nintended_target=b\n\n", "missing service_and_arg="},
        BadRequest{kOk + "\nextra", "data after the blank line"},
        BadRequest{kOk + "bogus\n\n", "malformed request line 4: no '='"},
        BadRequest{kOk + "color=red\n\n", "malformed request line 4: unknown key 'color'"},
        BadRequest{kOk + "source=x\n\n", "malformed request line 4: repeated key 'source'"},
        BadRequest{"source=a\tb\nintended_target=b\nservice_and_arg=c+\n\n",
                   "malformed request line 1: control or non-ASCII byte"},
        BadRequest{std::string("source=a\0b\nintended_target=b\nservice_and_arg=c+\n\n", 49),
                   "malformed request line 1: control or non-ASCII byte"},
        BadRequest{"source=a\r\nintended_target=b\nservice_and_arg=c+\n\n",
                   "malformed request line 1: control or non-ASCII byte"},
        BadRequest{kOk + "just_evaluate=maybe\n\n", "malformed request line 4: expected yes or no"},
        BadRequest{kOk + "assume_yes_for_ask=1\n\n", "malformed request line 4: expected yes or no"},
        BadRequest{kOk + "domain_id=x1\n\n", "malformed request line 4: domain_id is not a number"},
        BadRequest{kOk + "domain_id=\n\n", "malformed request line 4: domain_id is not a number"},
        BadRequest{"source=" + std::string(5000, 'a') + "\nintended_target=b\nservice_and_arg=c+\n\n",
                   "malformed request line 1: value too long"},
        BadRequest{std::string(70000, 'a'), "request too long"},
        BadRequest{"source=\xff\nintended_target=b\nservice_and_arg=c+\n\n",
                   "malformed request line 1: control or non-ASCII byte"}));

TEST(SocketReply, Allow) {
  Decision d;
  d.action = Action::kAllow;
  d.target = "vault";
  d.target_uuid = "22222222-2222-4222-8222-222222222222";
  d.requested_target = "@default";
  d.user = "root";
  EXPECT_EQ(FormatSocketReply(d),
            "result=allow\ntarget=vault\ntarget_uuid=22222222-2222-4222-8222-222222222222\nautostart=True\n"
            "requested_target=@default\nuser=root\n");
}

TEST(SocketReply, AllowDispVmNoAutostart) {
  Decision d;
  d.action = Action::kAllow;
  d.target = "@dispvm:default-dvm";
  d.requested_target = "@dispvm";
  d.autostart = false;
  EXPECT_EQ(FormatSocketReply(d),
            "result=allow\ntarget=@dispvm:default-dvm\nautostart=False\nrequested_target=@dispvm\n");
}

TEST(SocketReply, DenyAndAskAreBareDeny) {
  Decision d;
  d.action = Action::kDeny;
  d.target = "x";
  EXPECT_EQ(FormatSocketReply(d), "result=deny\n");
  d.action = Action::kAsk;
  EXPECT_EQ(FormatSocketReply(d), "result=deny\n");
}

TEST(SocketReply, ErrorIsSanitized) {
  EXPECT_EQ(FormatSocketError("bad\nthing\x01"), "result=deny\nerror=bad?thing?\n");
}

}  // namespace
}  // namespace odyssey::qrexec::policy
