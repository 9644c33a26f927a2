#include "hal/domain.h"

namespace odyssey::hal {

std::string ToString(DomainState state) {
  switch (state) {
    case DomainState::kDefined: return "defined";
    case DomainState::kPaused: return "paused";
    case DomainState::kRunning: return "running";
    case DomainState::kShutOff: return "shut-off";
    case DomainState::kCrashed: return "crashed";
  }
  return "unknown";
}

}  // namespace odyssey::hal
