// SIGPIPE and the collectives: a write to a socket whose peer died raises SIGPIPE, whose default
// action kills the writer. Gloo's TCP transport (Debian's libgloo) writes with plain writev(2),
// so without this one dead rank could take down the survivors before any of them could name it.
#pragma once

namespace cohort::collectives {

// Makes a broken pipe an EPIPE error instead of a fatal signal, once per process: sets SIGPIPE
// to SIG_IGN when its disposition is still the default. A handler the program installed itself
// (or an inherited SIG_IGN) is left as it is. Called by every communicator constructor that
// opens sockets, and by CreateCommunicator; safe to call from any thread, any number of times.
void IgnoreSigpipe();

}  // namespace cohort::collectives
