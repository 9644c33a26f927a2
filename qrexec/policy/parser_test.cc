// Line and file parser: every token, option and directive; every syntax error reported as
// file:line:column with the offending token.
#include "qrexec/policy/parser.h"

#include <gtest/gtest.h>

#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {
namespace {

ParsedLine MustParse(const std::string& line, LineFormat format = LineFormat::kFull) {
  ParsedLine out;
  LineContext ctx{format, "t.policy", 1, "svc.Name", "+arg"};
  auto err = ParseLine(line, ctx, &out);
  EXPECT_FALSE(err.has_value()) << line << " -> " << (err ? err->ToString() : "");
  return out;
}

// ---- valid lines -------------------------------------------------------------------

class ValidLineTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ValidLineTest, Parses) {
  ParsedLine out;
  LineContext ctx{LineFormat::kFull, "t.policy", 1, "", ""};
  auto err = ParseLine(GetParam(), ctx, &out);
  EXPECT_FALSE(err.has_value()) << (err ? err->ToString() : "");
}

INSTANTIATE_TEST_SUITE_P(
    Policy, ValidLineTest,
    ::testing::Values(
        "qubes.Foo * @anyvm @anyvm allow", "* * @anyvm @anyvm deny", "qubes.Foo + work vault allow",
        "qubes.Foo +arg work vault ask", "qubes.Foo +a.b-c_d+e @tag:t1 @type:AppVM deny",
        "qubes.Foo * @adminvm @default ask default_target=work", "qubes.Foo * @adminvm @dispvm allow",
        "qubes.Foo * @dispvm:dvm @dispvm:dvm allow", "qubes.Foo * @dispvm:@tag:x @dispvm:@tag:y allow",
        "qubes.Foo * uuid:0123abcd-0000-4000-8000-0123456789ab uuid:0123abcd-0000-4000-8000-0123456789ab allow",
        "qubes.Foo * uuid:0123ABCD-0000-4000-8000-0123456789AB work deny", "qubes.Foo * * * allow target=@dispvm",
        "qubes.Foo * * * allow target=@adminvm", "qubes.Foo * * * allow target=work",
        "qubes.Foo * * * allow target=uuid:0123abcd-0000-4000-8000-0123456789ab",
        "qubes.Foo * * * allow target=@dispvm:dvm", "qubes.Foo * * * allow user=root notify=yes autostart=no target=work",
        "qubes.Foo * * * ask user=u default_target=@dispvm target=work", "qubes.Foo * * * deny notify=yes",
        "qubes.Foo * * * deny notify=no", "qubes.Foo * * * ask default_target=@dispvm:dvm",
        "qubes.Foo * * * ask default_target=@adminvm", "   # comment", "", "\t\t", "#!include x",
        "qubes.Foo * work vault allow\r", "\tqubes.Foo\t*\twork\tvault\tallow", "!include x", "!include-dir /abs",
        "!include-service qubes.Foo +x p", "!include-service * * p", "qubes.Foo * @type:TemplateVM @tag:a-b_c deny",
        "qubes.Foo * a.b-c_D @anyvm allow", "qubes.Foo * abcdefghijklmnopqrstuvwxyz01234 @anyvm allow"));

TEST(ParseLine, FullRuleFields) {
  ParsedLine p = MustParse("qubes.Foo +bar @tag:t @dispvm:@tag:d ask user=u default_target=@dispvm target=work notify=yes autostart=no");
  ASSERT_EQ(p.kind, ParsedLine::Kind::kRule);
  const Rule& r = p.rule;
  EXPECT_EQ(r.service, "qubes.Foo");
  EXPECT_EQ(r.argument, "+bar");
  EXPECT_EQ(r.source.kind, TokenKind::kTag);
  EXPECT_EQ(r.source.value, "t");
  EXPECT_EQ(r.target.kind, TokenKind::kDispVmTag);
  EXPECT_EQ(r.target.value, "d");
  EXPECT_EQ(r.action, Action::kAsk);
  EXPECT_EQ(r.user, "u");
  ASSERT_TRUE(r.default_target.has_value());
  EXPECT_EQ(r.default_target->kind, TokenKind::kDispVm);
  ASSERT_TRUE(r.redirect.has_value());
  EXPECT_EQ(r.redirect->kind, TokenKind::kName);
  EXPECT_EQ(r.redirect->value, "work");
  EXPECT_EQ(r.notify, true);
  EXPECT_EQ(r.autostart, false);
  EXPECT_EQ(r.where.ToString(true), "t.policy:1:1");
}

struct TokenCase {
  const char* text;
  TokenKind kind;
  const char* value;
};

class TokenKindTest : public ::testing::TestWithParam<TokenCase> {};

TEST_P(TokenKindTest, ClassifiesInTargetColumn) {
  auto t = ParseToken(GetParam().text, TokenContext::kTarget);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->kind, GetParam().kind);
  EXPECT_EQ(t->value, GetParam().value);
}

INSTANTIATE_TEST_SUITE_P(
    Policy, TokenKindTest,
    ::testing::Values(TokenCase{"work", TokenKind::kName, "work"}, TokenCase{"*", TokenKind::kAny, ""},
                      TokenCase{"@anyvm", TokenKind::kAnyVm, ""}, TokenCase{"@adminvm", TokenKind::kAdminVm, ""},
                      TokenCase{"@default", TokenKind::kDefault, ""}, TokenCase{"@type:AppVM", TokenKind::kType, "AppVM"},
                      TokenCase{"@tag:x-y", TokenKind::kTag, "x-y"}, TokenCase{"@dispvm", TokenKind::kDispVm, ""},
                      TokenCase{"@dispvm:dvm", TokenKind::kDispVmTemplate, "dvm"},
                      TokenCase{"@dispvm:@tag:t", TokenKind::kDispVmTag, "t"},
                      TokenCase{"uuid:0123ABCD-0000-4000-8000-0123456789AB", TokenKind::kUuid,
                                "0123abcd-0000-4000-8000-0123456789ab"}));

struct ContextCase {
  const char* text;
  bool source;
  bool target;
  bool redirect;
};

class TokenContextTest : public ::testing::TestWithParam<ContextCase> {};

TEST_P(TokenContextTest, AllowedWhereTheSpecSays) {
  const auto& c = GetParam();
  EXPECT_EQ(ParseToken(c.text, TokenContext::kSource).ok(), c.source) << c.text;
  EXPECT_EQ(ParseToken(c.text, TokenContext::kTarget).ok(), c.target) << c.text;
  EXPECT_EQ(ParseToken(c.text, TokenContext::kRedirect).ok(), c.redirect) << c.text;
}

INSTANTIATE_TEST_SUITE_P(
    Policy, TokenContextTest,
    ::testing::Values(ContextCase{"work", true, true, true}, ContextCase{"*", true, true, false},
                      ContextCase{"@anyvm", true, true, false}, ContextCase{"@adminvm", true, true, true},
                      ContextCase{"@default", false, true, false}, ContextCase{"@type:AppVM", true, true, false},
                      ContextCase{"@tag:t", true, true, false}, ContextCase{"@dispvm", false, true, true},
                      ContextCase{"@dispvm:dvm", true, true, true}, ContextCase{"@dispvm:@tag:t", true, true, false},
                      ContextCase{"uuid:0123abcd-0000-4000-8000-0123456789ab", true, true, true},
                      ContextCase{"@unknown", false, false, false}, ContextCase{"0name", false, false, false},
                      ContextCase{"uuid:xyz", false, false, false}, ContextCase{"@tag:", false, false, false},
                      ContextCase{"@dispvm:", false, false, false}, ContextCase{"@dispvm:@tag:", false, false, false},
                      ContextCase{"abcdefghijklmnopqrstuvwxyz012345", false, false, false},
                      ContextCase{"$anyvm", false, false, false}));

// ---- syntax errors: exact file:line:column and token --------------------------------

struct ErrorCase {
  const char* text;
  const char* expected;
};

class SyntaxErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(SyntaxErrorTest, ReportsFileLineColumnAndToken) {
  auto policy = Policy::FromString(GetParam().text, "t.policy", "/nonexistent");
  ASSERT_FALSE(policy->ok());
  EXPECT_EQ(policy->error(), GetParam().expected);
  EXPECT_EQ(policy->rule_count(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Policy, SyntaxErrorTest,
    ::testing::Values(
        ErrorCase{"qubes.Foo", "t.policy:1:10: missing ARGUMENT after 'qubes.Foo'"},
        ErrorCase{"qubes.Foo +", "t.policy:1:12: missing SOURCE after '+'"},
        ErrorCase{"qubes.Foo + work", "t.policy:1:17: missing TARGET after 'work'"},
        ErrorCase{"qubes.Foo + work vault", "t.policy:1:23: missing ACTION after 'vault'"},
        ErrorCase{"qubes.Foo + work vault permit",
                  "t.policy:1:24: invalid action (expected allow, deny or ask) 'permit'"},
        ErrorCase{"qubes.Foo+x + work vault allow", "t.policy:1:1: invalid service name 'qubes.Foo+x'"},
        ErrorCase{"qubes.Foo x work vault allow", "t.policy:1:11: invalid argument (expected '*', '+' or '+ARG') 'x'"},
        ErrorCase{"* + work vault allow", "t.policy:1:3: service '*' needs argument '*' '+'"},
        ErrorCase{"qubes.Foo + @default vault allow", "t.policy:1:13: token not allowed in the source column '@default'"},
        ErrorCase{"qubes.Foo + @dispvm vault allow", "t.policy:1:13: token not allowed in the source column '@dispvm'"},
        ErrorCase{"qubes.Foo + work @foo allow", "t.policy:1:18: unknown keyword in the target column '@foo'"},
        ErrorCase{"qubes.Foo + work 1abc allow", "t.policy:1:18: invalid domain name in the target column '1abc'"},
        ErrorCase{"qubes.Foo + @tag: vault allow", "t.policy:1:13: invalid tag in @tag: in the source column '@tag:'"},
        ErrorCase{"qubes.Foo + @type: vault allow",
                  "t.policy:1:13: invalid type in @type: in the source column '@type:'"},
        ErrorCase{"qubes.Foo + work uuid:1234 allow", "t.policy:1:18: invalid uuid in the target column 'uuid:1234'"},
        ErrorCase{"qubes.Foo + work @dispvm: allow",
                  "t.policy:1:18: invalid template name in @dispvm: in the target column '@dispvm:'"},
        ErrorCase{"qubes.Foo + work @dispvm:@tag: allow",
                  "t.policy:1:18: invalid tag in @dispvm:@tag: in the target column '@dispvm:@tag:'"},
        ErrorCase{"qubes.Foo + work vault allow target=@anyvm",
                  "t.policy:1:37: token not allowed in the target=/default_target= column '@anyvm'"},
        ErrorCase{"qubes.Foo + work vault allow target=@tag:x",
                  "t.policy:1:37: token not allowed in the target=/default_target= column '@tag:x'"},
        ErrorCase{"qubes.Foo + work vault allow target=@default",
                  "t.policy:1:37: token not allowed in the target=/default_target= column '@default'"},
        ErrorCase{"qubes.Foo + work vault allow target=*",
                  "t.policy:1:37: token not allowed in the target=/default_target= column '*'"},
        ErrorCase{"qubes.Foo + work vault allow foo=bar", "t.policy:1:30: unknown option 'foo=bar'"},
        ErrorCase{"qubes.Foo + work vault allow user", "t.policy:1:30: expected an option KEY=VALUE 'user'"},
        ErrorCase{"qubes.Foo + work vault allow user=a user=b", "t.policy:1:37: duplicate option 'user=b'"},
        ErrorCase{"qubes.Foo + work vault deny target=work",
                  "t.policy:1:29: option not valid for action 'deny' 'target=work'"},
        ErrorCase{"qubes.Foo + work vault allow default_target=work",
                  "t.policy:1:30: option not valid for action 'allow' 'default_target=work'"},
        ErrorCase{"qubes.Foo + work vault deny user=x", "t.policy:1:29: option not valid for action 'deny' 'user=x'"},
        ErrorCase{"qubes.Foo + work vault deny autostart=no",
                  "t.policy:1:29: option not valid for action 'deny' 'autostart=no'"},
        ErrorCase{"qubes.Foo + work vault allow notify=maybe",
                  "t.policy:1:30: invalid value (expected yes or no) 'notify=maybe'"},
        ErrorCase{"qubes.Foo + work vault allow autostart=true",
                  "t.policy:1:30: invalid value (expected yes or no) 'autostart=true'"},
        ErrorCase{"qubes.Foo + work vault allow user=", "t.policy:1:30: empty option value 'user='"},
        ErrorCase{"qubes.Foo + work vault allow user=a/b", "t.policy:1:30: invalid user name 'user=a/b'"},
        ErrorCase{"!include", "t.policy:1:9: missing PATH after '!include'"},
        ErrorCase{"!include a b", "t.policy:1:12: unexpected field after !include PATH 'b'"},
        ErrorCase{"!include-dir", "t.policy:1:13: missing DIRECTORY after '!include-dir'"},
        ErrorCase{"!include-dir a b", "t.policy:1:16: unexpected field after !include-dir DIRECTORY 'b'"},
        ErrorCase{"!include-service qubes.Foo +", "t.policy:1:29: missing PATH after '+'"},
        ErrorCase{"!include-service qubes.Foo", "t.policy:1:27: missing ARGUMENT after 'qubes.Foo'"},
        ErrorCase{"!include-service", "t.policy:1:17: missing SERVICE after '!include-service'"},
        ErrorCase{"!include-service * + x", "t.policy:1:20: service '*' needs argument '*' '+'"},
        ErrorCase{"!include-service q.F + x y", "t.policy:1:26: unexpected field after !include-service SERVICE ARGUMENT PATH 'y'"},
        ErrorCase{"!includes x", "t.policy:1:1: unknown directive '!includes'"},
        ErrorCase{"!compat-4.0", "t.policy:1:1: unknown directive '!compat-4.0'"},
        ErrorCase{"qubes.Foo + work vault allow\x01", "t.policy:1:29: invalid character '\\x01'"},
        ErrorCase{"  qubes.Foo + work @bad allow", "t.policy:1:20: unknown keyword in the target column '@bad'"},
        ErrorCase{"qubes.Foo\t+\twork\t@bad\tallow", "t.policy:1:18: unknown keyword in the target column '@bad'"},
        ErrorCase{"qubes.Foo + w\xc3\xb6rk vault allow", "t.policy:1:14: invalid character '\\xc3'"},
        ErrorCase{"# c\n\nqubes.Foo + work vault nope", "t.policy:3:24: invalid action (expected allow, deny or ask) 'nope'"},
        ErrorCase{"qubes.Foo + work vault ask default_target=@anyvm",
                  "t.policy:1:43: token not allowed in the target=/default_target= column '@anyvm'"},
        ErrorCase{"qubes.Foo + work vault allow target=@dispvm:@tag:x",
                  "t.policy:1:37: token not allowed in the target=/default_target= column '@dispvm:@tag:x'"},
        ErrorCase{"qubes.Foo + $anyvm vault allow", "t.policy:1:13: invalid domain name in the source column '$anyvm'"},
        ErrorCase{"qubes.Foo * work vault allow\nqubes.Bar * work vault allow extra",
                  "t.policy:2:30: expected an option KEY=VALUE 'extra'"}));

TEST(ParseLine, ServiceFormatUsesDirectiveServiceAndDollarKeywords) {
  ParsedLine p = MustParse("$anyvm $dispvm:$tag:t allow target=$dispvm", LineFormat::kService);
  ASSERT_EQ(p.kind, ParsedLine::Kind::kRule);
  EXPECT_EQ(p.rule.service, "svc.Name");
  EXPECT_EQ(p.rule.argument, "+arg");
  EXPECT_EQ(p.rule.source.kind, TokenKind::kAnyVm);
  EXPECT_EQ(p.rule.target.kind, TokenKind::kDispVmTag);
  EXPECT_EQ(p.rule.redirect->kind, TokenKind::kDispVm);
}

TEST(ParseLine, ServiceFormatRefusesNestedDirectoryIncludes) {
  ParsedLine out;
  LineContext ctx{LineFormat::kService, "s", 4, "svc", "+"};
  auto err = ParseLine("!include-dir x", ctx, &out);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->ToString(), "s:4:1: directive not allowed in an !include-service file '!include-dir'");
}

TEST(ParseLine, ServiceFormatMissingAction) {
  ParsedLine out;
  LineContext ctx{LineFormat::kService, "s", 2, "svc", "+"};
  auto err = ParseLine("work vault", ctx, &out);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->ToString(), "s:2:11: missing ACTION after 'vault'");
}

TEST(ParseLine, IncludeServiceFields) {
  ParsedLine p = MustParse("!include-service qubes.Foo +x some/path");
  EXPECT_EQ(p.kind, ParsedLine::Kind::kIncludeService);
  EXPECT_EQ(p.service, "qubes.Foo");
  EXPECT_EQ(p.argument, "+x");
  EXPECT_EQ(p.path, "some/path");
  EXPECT_EQ(p.path_column, 31);
}

TEST(ParseLine, LongLineIsHandled) {
  std::string line = "qubes.Foo + work vault allow " + std::string(100000, 'x');
  auto policy = Policy::FromString(line, "t.policy", "/");
  ASSERT_FALSE(policy->ok());
  EXPECT_NE(policy->error().find("t.policy:1:30: expected an option KEY=VALUE"), std::string::npos);
}

TEST(Validators, ServiceAndArgument) {
  EXPECT_TRUE(IsValidServiceName("qubes.OpenURL"));
  EXPECT_FALSE(IsValidServiceName(""));
  EXPECT_FALSE(IsValidServiceName("a+b"));
  EXPECT_FALSE(IsValidServiceName("a/b"));
  EXPECT_TRUE(IsValidArgument("+"));
  EXPECT_TRUE(IsValidArgument("+a+b"));
  EXPECT_FALSE(IsValidArgument(""));
  EXPECT_FALSE(IsValidArgument("a"));
  EXPECT_FALSE(IsValidArgument("+a b"));
  EXPECT_TRUE(IsValidUuid("0123abcd-0000-4000-8000-0123456789ab"));
  EXPECT_FALSE(IsValidUuid("0123abcd00000-4000-8000-0123456789ab"));
}

}  // namespace
}  // namespace odyssey::qrexec::policy
