#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
#   intree-file.sh BASE PATH
#
# Prints the version of kernel-patches/src/PATH that the series of BASE
# carries (see intree_file in common.sh).  The series check of
# `cargo xtask kernel --check` compares the patches against it.

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

(($# == 2)) || { echo "usage: $0 BASE PATH" >&2; exit 2; }
intree_file "$1" "$2"
