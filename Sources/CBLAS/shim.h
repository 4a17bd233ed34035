#include <cblas.h>

/* OpenBLAS extension: the server runs BLAS single-threaded per call. */
void openblas_set_num_threads(int num_threads);
