// qubes.OpenInVM / qubes.OpenURL through the LocalRunner and the real services: edits come
// back atomically, view-only takes nothing back, and every failure leaves the original
// intact (with a backup and the edited content kept when write-back itself fails).
#include <fcntl.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "handlers/open_in_vm.h"
#include "tests/handlers/local_runner.h"
#include "tests/handlers/test_util.h"

namespace odyssey::handlers {
namespace {

using testing::Exists;
using testing::ListDir;
using testing::LocalRunner;
using testing::ReadText;
using testing::TempDir;
using testing::WriteText;

class OpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A "viewer" that edits the file it is given, as a user saving in the disposable would.
    WriteText(tools_ / "editor", "#!/bin/sh\necho 'edited in the disposable' >> \"$1\"\n", 0755);
    WriteText(tools_ / "reader", "#!/bin/sh\ncat \"$1\" > /dev/null\n", 0755);
    WriteText(work_ / "notes.txt", "original\n", 0640);
  }
  LocalRunner Runner(const std::string& viewer) {
    return LocalRunner({testing::ServicesDir()}, {"ODYSSEY_VIEWER=" + tools_ / viewer, "DISPLAY=", "HOME=" + home_.path()});
  }
  // A service dir whose qubes.OpenInVM is the given shell body.
  LocalRunner Fake(const std::string& body) {
    WriteText(fake_ / "qubes.OpenInVM", "#!/bin/sh\ncat > /dev/null\n" + body + "\n", 0755);
    return LocalRunner({fake_.path()});
  }
  TempDir work_, tools_, fake_, home_;
};

TEST_F(OpenTest, HeaderIsQubesShaped) {
  std::string h = OpenInVmHeader("/x/My Report (1).pdf", false);
  ASSERT_EQ(h.size(), 256u);
  EXPECT_EQ(std::string(h.c_str()), "My_Report__1_.pdf");
  EXPECT_EQ(std::string(OpenInVmHeader("a/b.txt", true).c_str()), "view-only-b.txt");
  EXPECT_EQ(SanitizeBasename(".."), "file");
  std::string longname(300, 'a');
  EXPECT_EQ(std::string(OpenInVmHeader(longname + ".pdf", false).c_str()).size(), 200u);
}

TEST_F(OpenTest, EditComesBackAtomicallyWithTheSameMode) {
  LocalRunner runner = Runner("editor");
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->written_back);
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\nedited in the disposable\n");
  struct stat st;
  ASSERT_EQ(::stat((work_ / "notes.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(ListDir(work_.path()), std::vector<std::string>{"notes.txt"}) << "no backup or temp left";
  ASSERT_EQ(runner.calls().size(), 1u);
  EXPECT_EQ(runner.calls()[0].service, "qubes.OpenInVM");
  EXPECT_EQ(runner.calls()[0].target.kind, Target::Kind::kDisposable);
}

TEST_F(OpenTest, ViewOnlySendsNothingBack) {
  LocalRunner runner = Runner("editor");
  OpenOptions o;
  o.view_only = true;
  o.target = Target::Named("work");
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->written_back);
  EXPECT_EQ(r->bytes_returned, 0u) << "the service itself sends nothing in view-only mode";
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\n");
  EXPECT_EQ(runner.calls()[0].target.name, "work");
  // Even a service that sends something anyway cannot write back.
  LocalRunner liar = Fake("echo overwritten");
  r = OpenFileInDomain(liar, work_ / "notes.txt", o);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->bytes_returned, 0u);
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\n");
  EXPECT_EQ(ListDir(work_.path()), std::vector<std::string>{"notes.txt"});
}

TEST_F(OpenTest, UnmodifiedFileIsLeftAlone) {
  struct stat before, after;
  ASSERT_EQ(::stat((work_ / "notes.txt").c_str(), &before), 0);
  LocalRunner runner = Runner("reader");
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->written_back);
  ASSERT_EQ(::stat((work_ / "notes.txt").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
}

TEST_F(OpenTest, FailedWriteBackKeepsOriginalBackupAndEdit) {
  LocalRunner runner = Runner("editor");
  OpenOptions o;
  o.before_replace = [] { return Status(Error{"simulated: no space left on device", 28}); };
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("simulated: no space left"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("the original is kept in " + work_ / "notes.txt.odyssey-backup"),
            std::string::npos) << r.error().message;
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\n");
  EXPECT_EQ(ReadText(work_ / "notes.txt.odyssey-backup"), "original\n");
  EXPECT_EQ(ReadText(work_ / "notes.txt.odyssey-edited"), "original\nedited in the disposable\n");
}

TEST_F(OpenTest, HostSideChangeDuringTheCallKeepsBoth) {
  // The "viewer" stands in for the user editing the original on the host meanwhile.
  WriteText(tools_ / "racer", "#!/bin/sh\necho x >> \"$1\"\necho host-edit >> '" + work_ / "notes.txt" + "'\n", 0755);
  LocalRunner runner = Runner("racer");
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("changed on the host"), std::string::npos) << r.error().message;
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\nhost-edit\n");
  EXPECT_EQ(ReadText(work_ / "notes.txt.odyssey-edited"), "original\nx\n");
}

TEST_F(OpenTest, FailingServiceNeverTouchesTheOriginal) {
  LocalRunner runner = Fake("printf 'half an edit'; exit 3");
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("failed with exit code 3; " + work_ / "notes.txt" + " is unchanged"),
            std::string::npos) << r.error().message;
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\n");
  EXPECT_EQ(ListDir(work_.path()), std::vector<std::string>{"notes.txt"});
}

TEST_F(OpenTest, OversizedReturnIsCutOff) {
  LocalRunner runner = Fake("exec cat /dev/zero");
  OpenOptions o;
  o.max_return_bytes = 1 << 20;
  auto r = OpenFileInDomain(runner, work_ / "notes.txt", o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("exceeds the cap of 1048576 bytes"), std::string::npos) << r.error().message;
  EXPECT_EQ(ReadText(work_ / "notes.txt"), "original\n");
  EXPECT_EQ(ListDir(work_.path()), std::vector<std::string>{"notes.txt"});
}

TEST_F(OpenTest, HeadlessViewerReportsWhatItSaw) {
  testing::WritePdf(work_ / "paper.pdf", 2);
  LocalRunner runner({testing::ServicesDir()}, {"ODYSSEY_VIEWER=", "DISPLAY=", "HOME=" + home_.path()});
  int err = ::open((work_ / "stderr.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(err, 0);
  OpenOptions o;
  o.stderr_fd = err;
  auto r = OpenFileInDomain(runner, work_ / "paper.pdf", o);
  ::close(err);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->written_back);
  std::string log = ReadText(work_ / "stderr.log");
  EXPECT_NE(log.find("received paper.pdf"), std::string::npos) << log;
  EXPECT_NE(log.find("application/pdf"), std::string::npos) << log;
  EXPECT_NE(log.find("Pages:"), std::string::npos) << log;
  EXPECT_NE(log.find("Odyssey sample page 1"), std::string::npos) << log;
}

TEST_F(OpenTest, OpenUrlRecordsAndRefuses) {
  std::string log = home_ / "urls.log";
  LocalRunner runner({testing::ServicesDir()}, {"ODYSSEY_OPENURL_LOG=" + log, "DISPLAY="});
  auto r = OpenUrlInDomain(runner, "https://example.org/a?b=c", Target::Disposable("web-dvm"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), 0);
  EXPECT_EQ(ReadText(log), "https://example.org/a?b=c\n");
  EXPECT_EQ(runner.calls()[0].target.name, "web-dvm");
  // Refused on the host before any call.
  EXPECT_FALSE(OpenUrlInDomain(runner, "javascript:alert(1)", Target::Disposable()).ok());
  EXPECT_FALSE(OpenUrlInDomain(runner, "https://exa mple.org", Target::Disposable()).ok());
  EXPECT_EQ(runner.calls().size(), 1u);
  // And refused by the service itself when a caller sends something else.
  std::string out;
  EXPECT_EQ(testing::RunShell("printf 'file:///etc/passwd\\n' | " + testing::ServicesDir() + "/qubes.OpenURL", &out, true), 1);
  EXPECT_NE(out.find("Invalid URL"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::handlers
