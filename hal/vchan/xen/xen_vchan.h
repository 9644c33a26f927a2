// Xen vchan backend over libxenvchan (grant-table rings + event channels). Compiled only
// when pkg-config finds xenvchan; otherwise these entry points return an error. Ring and
// xenstore paths follow Qubes' vchan-xen so that Qubes peers interoperate.
#pragma once

#include "base/result.h"
#include "hal/vchan/vchan.h"

namespace odyssey::vchan {

// Whether this build links libxenvchan.
bool XenVchanCompiled();
// Server in our domain for peer_domain on port (xenstore data/vchan/<peer>/<port>).
Result<VchanPtr> XenVchanServer(int peer_domain, int port, const Options& opts);
// Client of the server in peer_domain (/local/domain/<peer>/data/vchan/<own>/<port>).
Result<VchanPtr> XenVchanClient(int peer_domain, int port, const Options& opts);

}  // namespace odyssey::vchan
