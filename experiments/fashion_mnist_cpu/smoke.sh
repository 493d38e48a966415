# Sourced by run.sh and run_parallel.sh for --smoke: the whole pipeline on the embedded
# sample in minutes, into runs-smoke/. It proves the pipeline; it says nothing about cells.
RUNS="${RUNS:-$HERE/runs-smoke}"
RESULTS="${RESULTS:-$HERE/runs-smoke/results}"
SEARCH_ARGS=(data.name=fashion_mnist_sample data.limit=256 optim.epochs=1
             arch.warmup_epochs=0 model.layers=3 model.init_channels=4)
COMPARE_ARGS=(train.data.name=fashion_mnist_sample train.data.limit=512
              train.data.test_limit=200 train.optim.epochs=1 train.model.layers=3
              train.model.init_channels=4 "seeds=[0,1]")
