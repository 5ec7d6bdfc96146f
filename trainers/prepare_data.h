// prepare_data.h: `draftalign prepare-data`: text and JSONL files -> a tokenized dataset directory (see shards.h).
//   *.jsonl  one JSON object per line; the document is the string under prepare.text_field.
//   *.txt    documents separated by blank lines.
// Every document gets the end-of-document token appended. Document k (counting over all inputs in order) goes to the
// validation split when it falls on the val_fraction grid, so the split and the shards do not depend on the number of
// tokenizer threads. The directory is built beside output_dir and swapped in when complete; an up-to-date dataset
// (same inputs, sizes, tokenizer and options) is left as it is.
#pragma once

#include <cstdint>
#include <string>

#include "cli/stage.h"
#include "config/config.h"
#include "data/shards.h"

namespace draftalign::train {

// The tokenizer directory of a config: prepare.tokenizer, or the target's directory when that is empty.
std::string tokenizer_dir(const config::Config& cfg);

// The stage: writes prepare.output_dir (index.json says what it holds, skipped_empty included); returns 0.
int prepare_data(const config::Config& cfg);
// Whether prepare.output_dir is up to date: its index records the fingerprint of these inputs, options and tokenizer.
bool prepare_data_complete(const config::Config& cfg);
// `draftalign prepare-data`.
cli::Stage prepare_data_stage();

}  // namespace draftalign::train
