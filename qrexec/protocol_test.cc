#include "qrexec/protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace odyssey::qrexec {
namespace {

MsgHeader H(uint32_t type, uint32_t len) { return MsgHeader{type, len}; }

std::string Body(const std::string& msg) { return msg.substr(sizeof(MsgHeader)); }

TEST(Version, Negotiation) {
  EXPECT_EQ(NegotiateVersion(4, 3).value(), 3u);
  EXPECT_EQ(NegotiateVersion(4, 9).value(), 4u);
  EXPECT_EQ(NegotiateVersion(3, 2).value(), 2u);
  EXPECT_FALSE(NegotiateVersion(4, 1).ok());
  EXPECT_FALSE(NegotiateVersion(4, 0).ok());
  EXPECT_EQ(MaxDataChunk(2), 4096u);
  EXPECT_EQ(MaxDataChunk(3), 65536u);
  EXPECT_EQ(MaxDataChunk(4), 65536u);
}

TEST(Header, DataChunkLimitsPerVersion) {
  EXPECT_TRUE(ValidateHeader(H(MSG_DATA_STDIN, 4096), Channel::kDataToService, 2).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_DATA_STDIN, 4097), Channel::kDataToService, 2).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_DATA_STDIN, 65536), Channel::kDataToService, 3).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_DATA_STDIN, 65537), Channel::kDataToService, 4).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_DATA_STDOUT, 0), Channel::kDataFromService, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_DATA_STDOUT, 1), Channel::kDataToService, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_DATA_STDIN, 1), Channel::kDataFromService, 4).ok());
}

TEST(Header, ExactSizes) {
  EXPECT_TRUE(ValidateHeader(H(MSG_HELLO, 4), Channel::kControlFromAgent, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_HELLO, 5), Channel::kControlFromAgent, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_DATA_EXIT_CODE, 8), Channel::kDataFromService, 4).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_CONNECTION_TERMINATED, 8), Channel::kControlFromAgent, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_CONNECTION_TERMINATED, 9), Channel::kControlFromAgent, 4).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_SERVICE_CONNECT, 40), Channel::kControlFromDaemon, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_SERVICE_CONNECT, 41), Channel::kControlFromDaemon, 4).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_TRIGGER_SERVICE, 128), Channel::kControlFromAgent, 2).ok());
}

TEST(Header, UnknownAndMisplacedTypes) {
  EXPECT_FALSE(ValidateHeader(H(0x999, 0), Channel::kControlFromAgent, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_EXEC_CMDLINE, 20), Channel::kControlFromAgent, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_TRIGGER_SERVICE3, 200), Channel::kControlFromDaemon, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_DATA_STDIN, 1), Channel::kControlFromAgent, 4).ok());
  // Trigger v3/v4 need the version that introduced them.
  EXPECT_FALSE(ValidateHeader(H(MSG_TRIGGER_SERVICE3, 200), Channel::kControlFromAgent, 2).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_TRIGGER_SERVICE4, 200), Channel::kControlFromAgent, 3).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_TRIGGER_SERVICE4, 200), Channel::kControlFromAgent, 4).ok());
}

TEST(Header, HugeLengthsRefusedBeforeAllocation) {
  EXPECT_FALSE(ValidateHeader(H(MSG_EXEC_CMDLINE, 0xffffffff), Channel::kControlFromDaemon, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_TRIGGER_SERVICE3, 0x7fffffff), Channel::kControlFromAgent, 4).ok());
  EXPECT_FALSE(ValidateHeader(H(MSG_EXEC_CMDLINE, 8 + 65536), Channel::kClientToDaemon, 4).ok());
  EXPECT_TRUE(ValidateHeader(H(MSG_EXEC_CMDLINE, 8 + 65535), Channel::kClientToDaemon, 4).ok());
}

TEST(Messages, HelloExitCodeRoundTrip) {
  std::string m = EncodeHello(4);
  ASSERT_EQ(m.size(), 12u);
  EXPECT_EQ(ParseHello(Body(m)).value(), 4u);
  EXPECT_EQ(ParseExitCode(Body(EncodeExitCode(-3))).value(), -3);
  EXPECT_FALSE(ParseExitCode("abc").ok());
}

TEST(Messages, ExecRoundTripAndStrictness) {
  std::string m = EncodeExec(MSG_EXEC_CMDLINE, 0, 513, "user:QUBESRPC a.b+ dom0");
  MsgHeader h;
  std::memcpy(&h, m.data(), sizeof h);
  EXPECT_EQ(h.type, MSG_EXEC_CMDLINE);
  EXPECT_EQ(h.len, m.size() - 8);
  auto r = ParseExecRequest(Body(m));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->connect_port, 513u);
  EXPECT_EQ(r->cmdline, "user:QUBESRPC a.b+ dom0");
  std::string b = Body(m);
  b.back() = 'x';  // missing NUL
  EXPECT_FALSE(ParseExecRequest(b).ok());
  b = Body(m);
  b[10] = '\0';  // inner NUL
  EXPECT_FALSE(ParseExecRequest(b).ok());
  EXPECT_FALSE(ParseExecRequest(std::string(9, '\0')).ok());  // empty command
}

TEST(Messages, ServiceConnectRefusedTerminated) {
  auto sc = ParseServiceConnect(Body(EncodeServiceConnect(7, 600, "SOCKET12")));
  ASSERT_TRUE(sc.ok());
  EXPECT_EQ(sc->connect_domain, 7u);
  EXPECT_EQ(sc->connect_port, 600u);
  EXPECT_EQ(sc->ident, "SOCKET12");
  EXPECT_EQ(ParseServiceRefused(Body(EncodeServiceRefused("abc"))).value(), "abc");
  std::string no_nul(32, 'a');
  EXPECT_FALSE(ParseServiceRefused(no_nul).ok());
  EXPECT_FALSE(ParseServiceRefused(std::string(32, '\0')).ok());  // empty ident
  auto t = ParseConnectionTerminated(Body(EncodeConnectionTerminated(0, 520)));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->connect_port, 520u);
}

TEST(Messages, TriggerV3V4RoundTrip) {
  TriggerRequest req;
  req.target_domain = "work";
  req.ident = "SOCKET3";
  req.service_name = "qubes.Filecopy+arg";
  std::string m = EncodeTrigger(req);
  MsgHeader h;
  std::memcpy(&h, m.data(), sizeof h);
  EXPECT_EQ(h.type, MSG_TRIGGER_SERVICE3);
  ASSERT_TRUE(ValidateHeader(h, Channel::kControlFromAgent, 3).ok());
  auto p = ParseTrigger(h.type, Body(m));
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->target_domain, "work");
  EXPECT_EQ(p->ident, "SOCKET3");
  EXPECT_EQ(p->service_name, "qubes.Filecopy+arg");
  req.source_domain = "src";
  req.target_domain = "@dispvm:tmpl";
  m = EncodeTrigger(req);
  std::memcpy(&h, m.data(), sizeof h);
  EXPECT_EQ(h.type, MSG_TRIGGER_SERVICE4);
  p = ParseTrigger(h.type, Body(m));
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->source_domain, "src");
  EXPECT_EQ(p->target_domain, "@dispvm:tmpl");
}

TEST(Messages, TriggerV2) {
  TriggerServiceParams p{};
  std::strcpy(p.service_name, "qubes.X+y");
  std::strcpy(p.target_domain, "vm1");
  std::strcpy(p.request_id.ident, "42");
  std::string body(reinterpret_cast<char*>(&p), sizeof p);
  auto r = ParseTrigger(MSG_TRIGGER_SERVICE, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->service_name, "qubes.X+y");
  std::memset(p.target_domain, 'a', sizeof p.target_domain);  // no NUL
  body.assign(reinterpret_cast<char*>(&p), sizeof p);
  EXPECT_FALSE(ParseTrigger(MSG_TRIGGER_SERVICE, body).ok());
}

TEST(Messages, TriggerRefusesHostileNames) {
  TriggerRequest req;
  req.target_domain = "work";
  req.ident = "x";
  req.service_name = "ok";
  std::string body = Body(EncodeTrigger(req));
  body.replace(body.size() - 3, 2, "/.");
  EXPECT_FALSE(ParseTrigger(MSG_TRIGGER_SERVICE3, body).ok());
  req.service_name = "a+..";
  EXPECT_FALSE(ParseTrigger(MSG_TRIGGER_SERVICE3, Body(EncodeTrigger(req))).ok());
  req.service_name = "svc";
  req.target_domain = "bad name";
  EXPECT_FALSE(ParseTrigger(MSG_TRIGGER_SERVICE3, Body(EncodeTrigger(req))).ok());
}

TEST(Cmdline, Forms) {
  auto c = ParseCmdline("DEFAULT:QUBESRPC qubes.VMShell+ dom0");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->user, "DEFAULT");
  EXPECT_TRUE(c->is_service);
  EXPECT_EQ(c->service, "qubes.VMShell");
  EXPECT_EQ(c->argument, "");
  EXPECT_EQ(c->source, "dom0");
  EXPECT_EQ(c->service_full(), "qubes.VMShell+");
  c = ParseCmdline("root:nogui:QUBESRPC a.b+c.d vm-1");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->nogui);
  EXPECT_EQ(c->argument, "c.d");
  c = ParseCmdline("user:echo hi; exit 3");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->is_service);
  EXPECT_EQ(c->command, "echo hi; exit 3");
  EXPECT_FALSE(ParseCmdline("no-colon").ok());
  EXPECT_FALSE(ParseCmdline("us er:ls").ok());
  EXPECT_FALSE(ParseCmdline("user:").ok());
  EXPECT_FALSE(ParseCmdline("user:QUBESRPC ../etc dom0").ok());
  EXPECT_FALSE(ParseCmdline(std::string("user:a\0b", 8)).ok());
}

TEST(Validators, Names) {
  EXPECT_TRUE(IsValidDomainName("work-1.a_b"));
  EXPECT_FALSE(IsValidDomainName("-x"));
  EXPECT_FALSE(IsValidDomainName(std::string(32, 'a')));
  EXPECT_TRUE(IsValidTargetSpec("@default"));
  EXPECT_TRUE(IsValidTargetSpec("@dispvm:fedora-dvm"));
  EXPECT_TRUE(IsValidTargetSpec("uuid:0123-abcd"));
  EXPECT_FALSE(IsValidTargetSpec("a/b"));
  EXPECT_TRUE(IsValidServiceName("qubes.OpenURL"));
  EXPECT_TRUE(IsValidServiceName("qubes.X+"));
  EXPECT_TRUE(IsValidServiceName("a+b+c"));
  EXPECT_FALSE(IsValidServiceName("+arg"));
  EXPECT_FALSE(IsValidServiceName("a/b"));
  EXPECT_FALSE(IsValidServiceName(".hidden"));
  EXPECT_FALSE(IsValidServiceName("a+.."));
  EXPECT_TRUE(IsValidIdent("SOCKET7"));
  EXPECT_FALSE(IsValidIdent(std::string(32, 'a')));
}

TEST(Policy, QueryAndReply) {
  PolicyQuery q{3, "work", "@default", "qubes.X+", "SOCKET1"};
  EXPECT_EQ(EncodePolicyQuery(q),
            "domain_id=3\nsource=work\nintended_target=@default\nservice_and_arg=qubes.X+\n"
            "process_ident=SOCKET1\n\n");
  auto r = ParsePolicyReply("result=allow\ntarget=vault\nautostart=True\nuser=bob\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->allow);
  EXPECT_EQ(r->target, "vault");
  EXPECT_EQ(r->user, "bob");
  EXPECT_TRUE(r->autostart);
  EXPECT_FALSE(ParsePolicyReply("result=deny\n")->allow);
  EXPECT_FALSE(ParsePolicyReply("").ok());
  EXPECT_FALSE(ParsePolicyReply("target=x\nresult=allow\n").ok());
  EXPECT_FALSE(ParsePolicyReply("result=allow\n").ok());  // no target
  EXPECT_FALSE(ParsePolicyReply("result=deny\ntarget=x\n").ok());
  EXPECT_FALSE(ParsePolicyReply("result=maybe\n").ok());
  EXPECT_FALSE(ParsePolicyReply("result=allow\ntarget=a/b\nautostart=True\n").ok());
}

}  // namespace
}  // namespace odyssey::qrexec
