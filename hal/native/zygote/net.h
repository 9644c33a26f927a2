// Network of a native domain: a fresh network namespace with only loopback, brought up.
#pragma once

#include "hal/native/zygote/fail.h"

namespace odyssey::hal::native::zygote {

// Sets lo up in the calling process's network namespace.
MaybeFailure BringUpLoopback();

}  // namespace odyssey::hal::native::zygote
