// The current time in UTC as RFC 3339 text, the form snapshot manifests and Kubernetes objects
// (creationTimestamp, conditions, a Lease's renewTime) carry.
#pragma once

#include <string>

namespace cohort {

// Seconds resolution: "2026-12-03T10:01:05Z".
std::string UtcNowRfc3339();

// Microseconds, as Kubernetes' MicroTime fields (a Lease's acquireTime and renewTime) want:
// "2026-12-03T10:01:05.123456Z".
std::string UtcNowRfc3339Micros();

}  // namespace cohort
