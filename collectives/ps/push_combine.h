// What a parameter server does with the pushes of one partition once every rank has sent it:
// checks that they describe the same call, and combines them. Reductions go through
// collectives/reduce.h in rank order, so every run gives the same bits.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "collectives/ps/ps.pb.h"

namespace cohort::collectives::ps {

// "allreduce #3 partition 2" (the collective and partition the push belongs to).
std::string DescribePush(const ::cohort::ps::PushRequest& push);

// Empty when push is well formed (known dtype and op, rank inside the world, data_bytes of data
// for count elements), else one line saying what is wrong.
std::string CheckPush(const ::cohort::ps::PushRequest& push, size_t data_bytes);

// Empty when b is the same call as a (kind, world, dtype, op, root, counts), else one line
// naming both ranks and what each passed.
std::string Mismatch(const ::cohort::ps::PushRequest& a, const ::cohort::ps::PushRequest& b);

// The answer to the pushes of every rank, pushes[r] being rank r's and data[r] its bytes (runs,
// in order; any alignment): the rank-ordered reduction (an average divided once, at the end),
// root's data, the concatenation in rank order, or nothing for a barrier. Every push passed
// CheckPush and matches pushes[0]. Each byte is read once: a reduction starts from a copy of
// rank 0's data and reduces every other rank's into it where it lies.
std::string Combine(const std::vector<const ::cohort::ps::PushRequest*>& pushes,
                    const std::vector<std::vector<std::string_view>>& data);

}  // namespace cohort::collectives::ps
