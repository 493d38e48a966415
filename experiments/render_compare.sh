# Sourced by pipeline.sh and fashion_mnist_cpu/run_parallel.sh: compare.yaml with its
# placeholders filled in. @SEARCH@, @SEARCH_COST@ and @SEARCH_PLAIN@ become the search run
# folders under $RUNS (a folder of seed<N>/ runs expands into one entry per seed);
# @HERE@ the experiment folder, for genotypes committed beside the configs.
render_compare() {  # render_compare: compare.yaml, filled in, on stdout
  sed -e "s#@SEARCH@#$RUNS/search#" -e "s#@SEARCH_COST@#$RUNS/search_cost#" \
    -e "s#@SEARCH_PLAIN@#$RUNS/search_plain#" -e "s#@HERE@#$HERE#" "$HERE/compare.yaml"
}
