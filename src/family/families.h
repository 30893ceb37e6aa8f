// Internal: one function per family entry (one file each).
#pragma once

#include "vtprune/family.h"

namespace vtprune::family {

const Family& llava15();
const Family& qwen25vl();

}  // namespace vtprune::family
