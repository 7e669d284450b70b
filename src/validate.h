/* The validation interface: reads SEXP arguments, reports the first problem. */
#ifndef CONV3D_VALIDATE_H
#define CONV3D_VALIDATE_H

#define R_NO_REMAP
#include <R.h>
#include <Rinternals.h>
#include "conv3d.h"

struct validation {
  enum conv_problem problem;
  const char* arg;  /* argument name as the user wrote it */
  SEXP value;       /* the offending value, for the message */
  int axis;         /* 0-based axis, or a count the message needs; -1 if none */
  SEXP expected;    /* what was expected (a shape), or R_NilValue */
};

/* Whether x holds numbers: a double or integer vector, not a factor (stored
 * as integer codes, not the numbers its levels read as). */
int is_number_vector(SEXP x);
void conv_validate(SEXP cfg, SEXP input_shape, SEXP built_channels, struct conv_spec* spec,
                   struct validation* v);
/* A transposed convolution (layer_conv_3d_transpose()): spec is the
 * convolution it is the adjoint of, from the transposed layer's output (its
 * input) to the transposed layer's input (its output), without bias;
 * *use_bias is the transposed layer's; n_params counts its weights. An
 * unbuilt layer (no input shape) gets channels -1. */
void conv_transpose_validate(SEXP cfg, SEXP input_shape, SEXP built_channels,
                             struct conv_spec* spec, int* use_bias, struct validation* v);
void conv3d_signal_validation(const struct validation* v);
void pool_validate(SEXP cfg, SEXP input_shape, struct conv_spec* spec, struct validation* v);
void conv_check_weight(SEXP w, const char* arg, const int64_t* dims, int rank,
                       struct validation* v);

#endif
