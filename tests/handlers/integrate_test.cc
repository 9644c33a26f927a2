// Desktop integration in a throw-away HOME: odyssey-integrate --user makes odyssey-open the
// xdg-mime default and installs the file-manager actions; xdg-open and gio open of a file
// and of a URL then reach odyssey-open and, through the runner, a "disposable" (the
// LocalRunner); --remove restores the user's previous defaults and leaves their files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include "handlers/integrate.h"
#include "tests/handlers/test_util.h"

namespace odyssey::handlers {
namespace {

using testing::Exists;
using testing::ReadText;
using testing::RunShell;
using testing::TempDir;
using testing::WriteText;

std::string Bin(const std::string& name) { return testing::BinaryDir() + "/handlers/" + name; }

class IntegrateTest : public ::testing::Test {
 protected:
  // A clean environment: only this HOME, no desktop session, the sanitizer settings kept.
  std::string Env(const std::string& extra = "") {
    std::string env = "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=" + home_.path() + " ";
    for (const char* v : {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"})
      if (const char* val = std::getenv(v)) env += std::string(v) + "='" + val + "' ";
    return env + extra + " ";
  }
  std::string Query(const std::string& mime) {
    std::string out;
    RunShell(Env() + "xdg-mime query default " + mime, &out);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
  int Integrate(const std::string& args, std::string* out) {
    return RunShell(Env() + Bin("odyssey-integrate") + " --user " + args, out, true);
  }
  // Waits (bounded) for a file that an asynchronous launcher (gio) writes.
  std::string WaitForContent(const std::string& path, const std::string& needle) {
    for (int i = 0; i < 600; ++i) {
      std::string text = ReadText(path);
      if (text.find(needle) != std::string::npos) return text;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return ReadText(path);
  }
  TempDir home_, work_;
};

TEST_F(IntegrateTest, InstallMakesUsTheDefaultAndRemoveRestoresTheUsers) {
  WriteText(home_ / ".config/mimeapps.list", "");
  ASSERT_EQ(RunShell("mkdir -p " + home_ / ".config/Thunar " + home_ / ".local/share/nautilus/scripts " +
                     home_ / ".local/share/applications"),
            0);
  WriteText(home_ / ".config/mimeapps.list",
            "[Added Associations]\ntext/plain=gedit.desktop;\n\n[Default Applications]\n"
            "application/pdf=evince.desktop\n");
  WriteText(home_ / ".local/share/applications/evince.desktop",
            "[Desktop Entry]\nType=Application\nName=Evince\nExec=true %U\n");
  std::string user_uca = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<actions>\n<action><name>Mine</name>"
                         "<unique-id>mine</unique-id><command>true</command><patterns>*</patterns></action>\n"
                         "</actions>\n";
  WriteText(home_ / ".config/Thunar/uca.xml", user_uca);
  WriteText(home_ / ".local/share/nautilus/scripts/My script", "#!/bin/sh\n", 0755);

  std::string out;
  ASSERT_EQ(Integrate("", &out), 0) << out;
  EXPECT_EQ(Query("application/pdf"), kDesktopId);
  EXPECT_EQ(Query("x-scheme-handler/https"), kDesktopId);
  std::string desktop = ReadText(home_ / ".local/share/applications/odyssey-open.desktop");
  EXPECT_NE(desktop.find("Exec=" + Bin("odyssey-open") + " -- %U"), std::string::npos) << desktop;
  EXPECT_NE(desktop.find("Name=Open in Disposable VM"), std::string::npos);
  EXPECT_NE(desktop.find("MimeType=application/pdf;"), std::string::npos);
  EXPECT_TRUE(Exists(home_ / ".local/share/nautilus/scripts/Open in Disposable VM"));
  EXPECT_TRUE(Exists(home_ / ".local/share/kio/servicemenus/odyssey-open.desktop"));
  std::string uca = ReadText(home_ / ".config/Thunar/uca.xml");
  EXPECT_NE(uca.find("<unique-id>mine</unique-id>"), std::string::npos);
  EXPECT_NE(uca.find("<command>" + Bin("odyssey-open") + " --dispvm -- %F</command>"), std::string::npos);
  EXPECT_EQ(RunShell("python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' '" +
                     home_ / ".config/Thunar/uca.xml" + "'"),
            0) << "uca.xml stays well-formed XML";
  // Installing twice changes nothing more and keeps the remembered previous default.
  ASSERT_EQ(Integrate("", &out), 0) << out;
  EXPECT_EQ(ReadText(home_ / ".config/Thunar/uca.xml"), uca);

  ASSERT_EQ(Integrate("--remove", &out), 0) << out;
  EXPECT_EQ(Query("application/pdf"), "evince.desktop");
  EXPECT_NE(Query("x-scheme-handler/https"), kDesktopId);
  EXPECT_FALSE(Exists(home_ / ".local/share/applications/odyssey-open.desktop"));
  EXPECT_FALSE(Exists(home_ / ".local/share/nautilus/scripts/Open in Disposable VM"));
  EXPECT_FALSE(Exists(home_ / ".local/share/kio/servicemenus/odyssey-open.desktop"));
  EXPECT_TRUE(Exists(home_ / ".local/share/nautilus/scripts/My script"));
  EXPECT_EQ(ReadText(home_ / ".config/Thunar/uca.xml"), user_uca);
  EXPECT_NE(ReadText(home_ / ".config/mimeapps.list").find("text/plain=gedit.desktop;"), std::string::npos);
}

TEST_F(IntegrateTest, RefusesToReplaceAFileItDidNotWrite) {
  ASSERT_EQ(RunShell("mkdir -p " + home_ / ".local/share/applications"), 0);
  WriteText(home_ / ".local/share/applications/odyssey-open.desktop", "[Desktop Entry]\nName=someone else\n");
  std::string out;
  EXPECT_EQ(Integrate("", &out), 1);
  EXPECT_NE(out.find("was not written by odyssey"), std::string::npos) << out;
  EXPECT_EQ(Integrate("--remove", &out), 0) << out;
  EXPECT_NE(out.find("left alone"), std::string::npos) << out;
  EXPECT_TRUE(Exists(home_ / ".local/share/applications/odyssey-open.desktop"));
}

TEST_F(IntegrateTest, XdgOpenAndGioOpenReachTheEngine) {
  std::string out;
  ASSERT_EQ(Integrate("", &out), 0) << out;
  testing::WritePdf(work_ / "sample.pdf", 1);
  std::string log = work_ / "engine.log";
  WriteText(work_ / "fake-odyssey", "#!/bin/sh\necho \"$*\" >> '" + log + "'\n", 0755);
  // xdg-open's generic mode uses .desktop files only when a display is named.
  std::string env = Env("DISPLAY=:99 ODYSSEY_CLI=" + work_ / "fake-odyssey");
  ASSERT_EQ(RunShell(env + "xdg-open " + work_ / "sample.pdf", &out, true), 0) << out;
  ASSERT_EQ(RunShell(env + "xdg-open https://example.org/from-xdg-open", &out, true), 0) << out;
  std::string text = ReadText(log);
  EXPECT_NE(text.find("open --no-route -- " + work_ / "sample.pdf"), std::string::npos) << text;
  EXPECT_NE(text.find("open --no-route -- https://example.org/from-xdg-open"), std::string::npos) << text;
  ASSERT_EQ(RunShell(env + "gio open https://example.org/from-gio", &out, true), 0) << out;
  text = WaitForContent(log, "from-gio");
  EXPECT_NE(text.find("open --no-route -- https://example.org/from-gio"), std::string::npos) << text;
}

TEST_F(IntegrateTest, XdgOpenReachesADisposableThroughTheRunner) {
  std::string out;
  ASSERT_EQ(Integrate("", &out), 0) << out;
  testing::WritePdf(work_ / "paper.pdf", 1);
  WriteText(work_ / "editor", "#!/bin/sh\nprintf '%%%% annotated in the disposable\\n' >> \"$1\"\n", 0755);
  std::string runner = testing::BinaryDir() + "/tests/handlers/handlers-local-runner --services " +
                       testing::SourceDir() + "/handlers/services";
  std::string env = Env("DISPLAY=:99 'ODYSSEY_RUNNER=" + runner + "' ODYSSEY_VIEWER=" + work_ / "editor" +
                        " ODYSSEY_OPENURL_LOG=" + work_ / "urls.log" + " ODYSSEY_TEST_RUNNER_LOG=" +
                        work_ / "calls.log");
  ASSERT_EQ(RunShell(env + "xdg-open " + work_ / "paper.pdf", &out, true), 0) << out;
  EXPECT_NE(ReadText(work_ / "paper.pdf").find("annotated in the disposable"), std::string::npos) << out;
  EXPECT_NE(out.find("saved the new version"), std::string::npos) << out;
  ASSERT_EQ(RunShell(env + "xdg-open https://example.org/runner", &out, true), 0) << out;
  EXPECT_EQ(ReadText(work_ / "urls.log"), "https://example.org/runner\n");
  EXPECT_EQ(ReadText(work_ / "calls.log"),
            "disposable of the default template qubes.OpenInVM+\n"
            "disposable of the default template qubes.OpenURL+\n");
}

TEST_F(IntegrateTest, OpenFollowsEveryActionOfTheRules) {
  WriteText(work_ / "10.rules",
            "url https://deny.example.org deny\nurl https://work.example.org vm:work\n"
            "url https://local.example.org local\nmime text/plain dispvm:text-dvm view-only\n");
  WriteText(work_ / "notes.txt", "hello\n");
  WriteText(work_ / "opener", "#!/bin/sh\necho \"local: $*\" > '" + work_ / "local.log" + "'\n", 0755);
  std::string open = Bin("odyssey-open") + " --rules-dir " + work_.path() + " ";
  std::string env = Env("ODYSSEY_CLI=/bin/echo ODYSSEY_LOCAL_OPENER=" + work_ / "opener");
  std::string out;
  EXPECT_EQ(RunShell(env + open + "https://deny.example.org/x", &out, true), 1);
  EXPECT_NE(out.find("refused: https://deny.example.org/x (rule " + work_ / "10.rules:1"), std::string::npos) << out;
  EXPECT_EQ(RunShell(env + open + "https://work.example.org/", &out, true), 0) << out;
  EXPECT_NE(out.find("open --vm work -- https://work.example.org/"), std::string::npos) << out;
  EXPECT_EQ(RunShell(env + open + "https://local.example.org/", &out, true), 0) << out;
  EXPECT_EQ(ReadText(work_ / "local.log"), "local: https://local.example.org/\n");
  EXPECT_EQ(RunShell(env + open + work_ / "notes.txt", &out, true), 0) << out;
  EXPECT_NE(out.find("open --dispvm text-dvm --view-only -- " + work_ / "notes.txt"), std::string::npos) << out;
  EXPECT_EQ(RunShell(env + open + "--dry-run --convert " + work_ / "notes.txt", &out, true), 0) << out;
  EXPECT_NE(out.find("would convert"), std::string::npos) << out;
  EXPECT_EQ(RunShell(env + "ODYSSEY_OPEN_DEPTH=1 " + open + work_ / "notes.txt", &out, true), 1);
  EXPECT_NE(out.find("ODYSSEY_LOCAL_OPENER"), std::string::npos) << out;
  // A selected file named like an option stays a file: the installed actions end the options
  // with "--", and a bare --dispvm never takes the next argument as its template.
  WriteText(work_ / "--runner=touch pwned", "hello\n");
  EXPECT_EQ(RunShell("cd " + work_.path() + " && " + env + Bin("odyssey-open") +
                         " --rules-dir . --dispvm -- '--runner=touch pwned'", &out, true), 0) << out;
  EXPECT_NE(out.find("open --no-route -- "), std::string::npos) << out;
  EXPECT_NE(out.find("--runner=touch pwned\n"), std::string::npos) << out;
  EXPECT_FALSE(Exists(work_ / "pwned"));
  EXPECT_EQ(RunShell(env + open + "--dispvm " + work_ / "notes.txt", &out, true), 0) << out;
  EXPECT_NE(out.find("open --no-route -- " + work_ / "notes.txt"), std::string::npos) << out;
  EXPECT_EQ(RunShell(Bin("odyssey-open") + " --help", &out), 0);
  EXPECT_EQ(RunShell(Bin("odyssey-integrate") + " --help", &out), 0);
}

}  // namespace
}  // namespace odyssey::handlers
