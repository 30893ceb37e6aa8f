// Internal: one function per family entry (one file each).
#pragma once

#include "vtprune/family.h"

namespace vtprune::family {

const Family& llava15();
const Family& llava_next();
const Family& qwen25vl();
const Family& gemma3();
const Family& idefics3();

// The sizes every libmtmd vision tower states (blocks, width, heads, patch, projector output), each checked to lie
// in a sane range before any arithmetic uses it; and clip.vision.feed_forward_length.
VisionFacts read_vision_sizes(const io::GgufFile& f, int* feed_forward);

// The SigLIP tower's metadata and tensors (Gemma 3, Idefics3); `default_merge` when the file sets no
// clip.vision.projector.scale_factor (0: the key is required).
VisionFacts check_siglip_tower(const io::GgufFile& f, int default_merge);

}  // namespace vtprune::family
