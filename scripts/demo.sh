#!/usr/bin/env bash
# Runs the example pipeline (examples/cell_density.json: synthetic blobs ->
# gaussian -> otsu -> label -> object counts and density per region, and a
# table of objects), writes the heatmaps as PNGs and the table as CSV, and
# prints where everything is.
#
#   scripts/demo.sh [CACHE_DIR [OUT_DIR]]   (defaults: ./cellflow-cache and ./out
#                                            in the repository)
set -euo pipefail

# Paths given by the user are relative to where they ran the script.
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$(abspath "${1:-$repo/cellflow-cache}")
out=$(abspath "${2:-$repo/out}")
cd "$repo"

bash scripts/setup.sh

graph="$repo/examples/cell_density.json"
cellflow="$repo/build/bin/cellflow"

echo
echo "== cellflow run examples/cell_density.json"
"$cellflow" run "$graph" --cache "$cache"

mkdir -p "$out"
png="$out/density.png"
echo
echo "== cellflow export examples/cell_density.json density"
"$cellflow" export "$graph" density --to "$png" --upscale 64 --cache "$cache"
counts_png="$out/counts.png"
echo
echo "== cellflow export examples/cell_density.json counts"
"$cellflow" export "$graph" counts --to "$counts_png" --upscale 64 --cache "$cache"
csv="$out/objects.csv"
echo
echo "== cellflow export examples/cell_density.json objects"
"$cellflow" export "$graph" objects --to "$csv" --cache "$cache"
echo "$(($(wc -l <"$csv") - 1)) objects; the first rows:"
head -n 6 "$csv" | cut -c 1-160

# The same workflow from a file: the raw volume exported as a TIFF, then
# examples/cell_density_tiff.json (read.image -> ... -> counts + objects), run
# from the output folder where its relative path "raw.tif" points. It hashes
# the TIFF by content, so rewriting the same TIFF recomputes nothing.
tif="$out/raw.tif"
echo
echo "== cellflow export examples/cell_density.json raw --to raw.tif; run examples/cell_density_tiff.json"
"$cellflow" export "$graph" raw --to "$tif" --cache "$cache"
(cd "$out" && "$cellflow" run "$repo/examples/cell_density_tiff.json" --cache "$cache")
# The smoothed volume as an OME-Zarr pyramid (3 levels) for napari.
ome="$out/smooth.ome.zarr"
echo
echo "== cellflow export examples/cell_density.json smooth --to smooth.ome.zarr --levels 3"
"$cellflow" export "$graph" smooth --to "$ome" --levels 3 --cache "$cache"

density_hash=$("$cellflow" graph "$graph" --hashes | awk '$1 == "density" { print $2 }')

echo
echo "== where everything is"
echo "cache folder:     $cache"
echo "density heatmap:  $png"
echo "count heatmap:    $counts_png"
echo "object table:     $csv"
echo "raw volume TIFF:  $tif (input of examples/cell_density_tiff.json)"
echo "smoothed pyramid: $ome (napari --plugin napari-ome-zarr $ome)"
echo "node hashes (each node is the OME-Zarr group $cache/<hash>):"
"$cellflow" graph "$graph" --hashes | sed 's/^/  /'
echo
echo "open a node in napari:"
echo "  napari --plugin napari-ome-zarr $cache/$density_hash"
echo "read it with zarr-python:"
echo "  /usr/bin/python3 -c \"import zarr; print(zarr.open('$cache/$density_hash/0')[:].mean())\""
echo "run again: nothing is recomputed (computed = 0):"
echo "  $cellflow run $graph --cache $cache"
