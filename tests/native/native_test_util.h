// Shared helpers of the native backend's integration tests: a hermetic fixture (own state
// dir, own host uid range, so counts of processes/cgroups/files are this test's alone), a
// client for the probe that stands in for the agent, and leak counters.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "base/unique_fd.h"
#include "hal/hypervisor.h"
#include "hal/native/native_hypervisor.h"

namespace odyssey::hal::native::testing {

// Path of native_sandbox_probe (set by CMake).
std::string ProbePath();

// Everything this test made that could leak.
struct LeakCounts {
  int processes = 0;     // live (non-zombie) host processes whose uid is in the test's range
  int leftovers = 0;     // cgroups/dirs a fresh hypervisor on the state dir reports
  int files = 0;         // non-directories under the state dir (sockets, logs …)
  int mounts = 0;        // host mount table entries naming the state dir
  std::string Describe() const;
  bool operator==(const LeakCounts&) const = default;
};

class NativeTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  TemplateSpec HostTemplate() const;
  DomainSpec Spec(const std::string& name) const;
  LeakCounts Count() const;
  // Waits (bounded, generously) until the domain reports kShutOff.
  bool WaitShutOff(Domain& domain) const;

  std::string state_dir_;
  NativeOptions options_;
  HypervisorPtr hv_;
};

// Connects to the probe's socket (retrying while it is missing or refused) and consumes
// its "hello". Invalid fd on failure.
UniqueFd ConnectProbe(const VchanEndpoint& ep);
// Sends one command line; returns the reply up to and including "end" for probe, or the
// single reply line otherwise; empty on EOF.
std::string Command(int fd, const std::string& line, bool multi_line = false);
std::map<std::string, std::string> ParseProbe(const std::string& text);

}  // namespace odyssey::hal::native::testing
