/* Validation of every layer_conv_3d() argument and the layer arithmetic (output
 * shape, 'same' split, parameter count). One routine serves shape inference, the
 * forward pass and summary(). Reads SEXPs but never raises: it reports a problem
 * and the argument it concerns; ffi_conv.c hands that to R to word. */
#include "validate.h"
#include <limits.h>
#include <math.h>
#include <string.h>
#include <strings.h>

int size_mul(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return 0;
  if (a != 0 && b > INT64_MAX / a) return 0;
  *out = a * b;
  return 1;
}

void conv_output_length(int64_t n, int64_t k, int64_t s, int64_t d, int same,
                        int64_t* out, int64_t* pad_lo, int64_t* pad_hi) {
  int64_t k_eff = (k - 1) * d + 1;
  if (n < 0) { /* unknown length */
    *out = -1; *pad_lo = -1; *pad_hi = -1;
    return;
  }
  if (!same) {
    *out = n >= k_eff ? (n - k_eff) / s + 1 : 0;
    *pad_lo = 0; *pad_hi = 0;
    return;
  }
  *out = (n + s - 1) / s;
  int64_t total = (*out - 1) * s + k_eff - n;
  if (total < 0) total = 0;
  *pad_lo = total / 2;
  *pad_hi = total - *pad_lo;
}

static void set_problem(struct validation* v, enum conv_problem p, const char* arg, SEXP value,
                        int axis) {
  if (v->problem != PROBLEM_NONE) return; /* report the first problem only */
  v->problem = p;
  v->arg = arg;
  v->value = value;
  v->axis = axis;
  v->expected = R_NilValue;
}

int is_number_vector(SEXP x) {
  return (TYPEOF(x) == INTSXP && !Rf_inherits(x, "factor")) || TYPEOF(x) == REALSXP;
}

static double number_at(SEXP x, R_xlen_t i) {
  if (TYPEOF(x) == INTSXP) return INTEGER(x)[i] == NA_INTEGER ? NA_REAL : INTEGER(x)[i];
  return REAL(x)[i];
}

/* A whole number in [1, 2^31 - 1]: anything larger cannot be a sensible size and
 * would overflow the shape arithmetic. */
static int positive_whole(double v) {
  return R_FINITE(v) && v >= 1 && v <= 2147483647.0 && v == floor(v);
}

static void read_scalar(SEXP x, const char* arg, int64_t* out, struct validation* v) {
  if (!is_number_vector(x)) { set_problem(v, PROBLEM_NOT_NUMERIC, arg, x, -1); return; }
  if (XLENGTH(x) != 1 || !positive_whole(number_at(x, 0))) {
    set_problem(v, PROBLEM_SCALAR_INT, arg, x, -1);
    return;
  }
  *out = (int64_t)number_at(x, 0);
}

static void read_tuple(SEXP x, const char* arg, int64_t out[3], struct validation* v) {
  if (!is_number_vector(x)) { set_problem(v, PROBLEM_NOT_NUMERIC, arg, x, -1); return; }
  R_xlen_t n = XLENGTH(x);
  if (n != 1 && n != 3) { set_problem(v, PROBLEM_TUPLE, arg, x, -1); return; }
  for (R_xlen_t i = 0; i < n; ++i) {
    if (!positive_whole(number_at(x, i))) { set_problem(v, PROBLEM_TUPLE, arg, x, -1); return; }
  }
  for (int i = 0; i < 3; ++i) out[i] = (int64_t)number_at(x, n == 1 ? 0 : i);
}

static int read_choice(SEXP x, const char* arg, const char* const* choices, int n_choices,
                       enum conv_problem problem, struct validation* v) {
  if (TYPEOF(x) == STRSXP && XLENGTH(x) == 1 && STRING_ELT(x, 0) != NA_STRING) {
    const char* s = CHAR(STRING_ELT(x, 0));
    for (int i = 0; i < n_choices; ++i) {
      if (strcasecmp(s, choices[i]) == 0) return i;
    }
  }
  set_problem(v, problem, arg, x, -1);
  return 0;
}

static SEXP list_elt(SEXP list, const char* name) {
  SEXP names = Rf_getAttrib(list, R_NamesSymbol);
  for (R_xlen_t i = 0; i < XLENGTH(list); ++i) {
    if (strcmp(CHAR(STRING_ELT(names, i)), name) == 0) return VECTOR_ELT(list, i);
  }
  return R_NilValue;
}

/* Fills spec from the normalised config list made by R/layer-conv-3d.R. */
static void read_config(SEXP cfg, struct conv_spec* spec, struct validation* v) {
  static const char* const paddings[] = {"valid", "same"};
  static const char* const formats[] = {"channels_last", "channels_first"};
  static const char* const dtypes[] = {"float32", "float64"};

  read_scalar(list_elt(cfg, "filters"), "filters", &spec->filters, v);
  read_tuple(list_elt(cfg, "kernel_size"), "kernel_size", spec->kernel, v);
  read_tuple(list_elt(cfg, "strides"), "strides", spec->strides, v);
  spec->same = read_choice(list_elt(cfg, "padding"), "padding", paddings, 2, PROBLEM_PADDING, v);
  spec->layout = (enum conv_layout)read_choice(list_elt(cfg, "data_format"), "data_format",
                                               formats, 2, PROBLEM_DATA_FORMAT, v);
  read_tuple(list_elt(cfg, "dilation_rate"), "dilation_rate", spec->dilation, v);
  /* a transposed layer's config has no groups (Keras's has none): one */
  SEXP groups = list_elt(cfg, "groups");
  spec->groups = 1;
  if (!Rf_isNull(groups)) read_scalar(groups, "groups", &spec->groups, v);
  SEXP use_bias = list_elt(cfg, "use_bias");
  if (TYPEOF(use_bias) != LGLSXP || XLENGTH(use_bias) != 1 || LOGICAL(use_bias)[0] == NA_LOGICAL) {
    set_problem(v, PROBLEM_FLAG, "use_bias", use_bias, -1);
  } else {
    spec->use_bias = LOGICAL(use_bias)[0];
  }
  spec->dtype = (enum conv_dtype)read_choice(list_elt(cfg, "dtype"), "dtype", dtypes, 2,
                                             PROBLEM_DTYPE, v);
  if (v->problem != PROBLEM_NONE) return;

  int strided = 0, dilated = 0;
  for (int i = 0; i < 3; ++i) {
    strided |= spec->strides[i] > 1;
    dilated |= spec->dilation[i] > 1;
  }
  if (strided && dilated) {
    set_problem(v, PROBLEM_STRIDES_DILATION, "strides", list_elt(cfg, "strides"), -1);
  } else if (spec->filters % spec->groups != 0) {
    set_problem(v, PROBLEM_FILTERS_GROUPS, "filters", list_elt(cfg, "filters"), (int)spec->groups);
  }
}

/* input_shape: R_NilValue (layer not built) or a numeric vector of length 5 in the
 * layer's data format, batch first; NA marks an unknown length. */
static void read_input_shape(SEXP shape, struct conv_spec* spec, struct validation* v) {
  spec->batch = -1;
  spec->channels = -1;
  for (int i = 0; i < 3; ++i) spec->in[i] = -1;
  if (Rf_isNull(shape)) return;
  if (!is_number_vector(shape)) { set_problem(v, PROBLEM_NOT_NUMERIC, "input shape", shape, -1); return; }
  if (XLENGTH(shape) != 5) { set_problem(v, PROBLEM_INPUT_RANK, "input shape", shape, -1); return; }
  int64_t dims[5];
  for (int i = 0; i < 5; ++i) {
    double d = number_at(shape, i);
    if (ISNA(d)) { dims[i] = -1; continue; }
    /* zero-length batches are legal; zero-length spatial axes are not */
    if (i == 0 && d == 0) { dims[i] = 0; continue; }
    if (!positive_whole(d)) { set_problem(v, PROBLEM_INPUT_DIM, "input shape", shape, i); return; }
    dims[i] = (int64_t)d;
  }
  int c_axis = spec->layout == LAYOUT_CHANNELS_LAST ? 4 : 1;
  int first_spatial = spec->layout == LAYOUT_CHANNELS_LAST ? 1 : 2;
  if (dims[c_axis] < 0) { set_problem(v, PROBLEM_CHANNELS_UNKNOWN, "input shape", shape, c_axis); return; }
  spec->batch = dims[0];
  spec->channels = dims[c_axis];
  for (int i = 0; i < 3; ++i) spec->in[i] = dims[first_spatial + i];
}

enum conv_problem conv_spec_finish(struct conv_spec* spec, int* axis) {
  *axis = -1;
  for (int i = 0; i < 3; ++i) {
    conv_output_length(spec->in[i], spec->kernel[i], spec->strides[i], spec->dilation[i],
                       spec->same, &spec->out[i], &spec->pad_lo[i], &spec->pad_hi[i]);
  }
  if (spec->channels < 0) return PROBLEM_NONE;
  if (spec->channels % spec->groups != 0) return PROBLEM_CHANNELS_GROUPS;
  for (int i = 0; i < 3; ++i) {
    if (spec->in[i] >= 0 && spec->out[i] <= 0) { *axis = i; return PROBLEM_OUTPUT_EMPTY; }
  }
  /* every size the driver will allocate, overflow-checked once here */
  int64_t taps, params, elems;
  /* packed weights pad each group's filters to a block of at most 64 */
  int64_t packed;
  if (!size_mul(spec->kernel[0], spec->kernel[1], &taps) ||
      !size_mul(taps, spec->kernel[2], &taps)) {
    return PROBLEM_KERNEL_OVERFLOW; /* the window's taps alone */
  }
  if (!size_mul(taps, spec->channels / spec->groups, &params) ||
      !size_mul(params, spec->filters + 64 * spec->groups, &packed) ||
      !size_mul(packed, 8, &packed) ||
      !size_mul(params, spec->filters, &params)) {
    return PROBLEM_WEIGHTS_OVERFLOW;
  }
  spec->n_params = params + (spec->use_bias ? spec->filters : 0);
  if (spec->in[0] >= 0 && spec->in[1] >= 0 && spec->in[2] >= 0) {
    /* an unknown batch is checked as one sample: the forward pass re-checks the real one */
    int64_t batch = spec->batch >= 0 ? spec->batch : 1;
    int64_t input = batch, padded = batch, out = batch;
    for (int i = 0; i < 3; ++i) {
      if (!size_mul(input, spec->in[i], &input) || !size_mul(out, spec->out[i], &out)) {
        return PROBLEM_SIZE_OVERFLOW;
      }
    }
    /* 8 bytes per element is the worst case (float64) */
    if (!size_mul(input, spec->channels, &elems) || !size_mul(elems, 8, &elems) ||
        !size_mul(out, spec->filters, &elems) || !size_mul(elems, 8, &elems)) {
      return PROBLEM_SIZE_OVERFLOW;
    }
    /* the input and output fit: only the padding of a wide window ('same')
     * can make the padded copy overflow, blamed on the most padded axis */
    int widest = 0;
    for (int i = 1; i < 3; ++i) {
      if (spec->pad_lo[i] + spec->pad_hi[i] > spec->pad_lo[widest] + spec->pad_hi[widest]) widest = i;
    }
    for (int i = 0; i < 3; ++i) {
      if (!size_mul(padded, spec->in[i] + spec->pad_lo[i] + spec->pad_hi[i], &padded)) {
        *axis = widest;
        return PROBLEM_WINDOW_OVERFLOW;
      }
    }
    if (!size_mul(padded, spec->channels, &elems) || !size_mul(elems, 8, &elems)) {
      *axis = widest;
      return PROBLEM_WINDOW_OVERFLOW;
    }
  }
  return PROBLEM_NONE;
}

/* An empty spec and no problem yet. */
static void validation_start(struct conv_spec* spec, struct validation* v) {
  memset(spec, 0, sizeof *spec);
  v->problem = PROBLEM_NONE;
  v->arg = NULL;
  v->value = R_NilValue;
  v->axis = -1;
  v->expected = R_NilValue;
}

/* The layer arithmetic of a read spec (conv_spec_finish), any problem blamed
 * on the argument that causes it. */
static void finish_validation(SEXP cfg, SEXP input_shape, struct conv_spec* spec,
                              struct validation* v) {
  int axis;
  enum conv_problem p = conv_spec_finish(spec, &axis);
  if (p == PROBLEM_CHANNELS_GROUPS) {
    set_problem(v, p, "groups", list_elt(cfg, "groups"),
                spec->channels > INT_MAX ? -1 : (int)spec->channels);
  } else if (p == PROBLEM_OUTPUT_EMPTY || p == PROBLEM_KERNEL_OVERFLOW) {
    set_problem(v, p, "kernel_size", list_elt(cfg, "kernel_size"), axis);
  } else if (p == PROBLEM_WEIGHTS_OVERFLOW) {
    set_problem(v, p, "filters", list_elt(cfg, "filters"), -1);
  } else if (p == PROBLEM_WINDOW_OVERFLOW) {
    /* a window spans (kernel - 1) x dilation + 1 voxels */
    const int dilated = spec->dilation[axis] > 1;
    set_problem(v, p, dilated ? "dilation_rate" : "kernel_size",
                list_elt(cfg, dilated ? "dilation_rate" : "kernel_size"), axis);
  } else if (p != PROBLEM_NONE) {
    set_problem(v, p, "input shape", input_shape, -1);
  }
}

/* The built channel count, when known, must be the input's. */
static int channels_match(SEXP built_channels, SEXP input_shape, const struct conv_spec* spec,
                          struct validation* v) {
  if (!Rf_isNull(built_channels) && spec->channels >= 0 &&
      number_at(built_channels, 0) != (double)spec->channels) {
    set_problem(v, PROBLEM_CHANNELS_BUILT, "input shape", input_shape,
                (int)number_at(built_channels, 0));
    return 0;
  }
  return 1;
}

void conv_validate(SEXP cfg, SEXP input_shape, SEXP built_channels, struct conv_spec* spec,
                   struct validation* v) {
  validation_start(spec, v);
  read_config(cfg, spec, v);
  if (v->problem != PROBLEM_NONE) return;
  read_input_shape(input_shape, spec, v);
  if (v->problem != PROBLEM_NONE || !channels_match(built_channels, input_shape, spec, v)) return;
  finish_validation(cfg, input_shape, spec, v);
}

/* output_padding of a transposed convolution: 1 or 3 whole numbers, each at
 * least 0 and below its axis's stride (as Keras requires). */
static void read_output_padding(SEXP x, SEXP strides, const struct conv_spec* spec, int64_t out[3],
                                struct validation* v) {
  const R_xlen_t n = is_number_vector(x) ? XLENGTH(x) : 0;
  int ok = n == 1 || n == 3;
  for (int i = 0; ok && i < 3; ++i) {
    const double d = number_at(x, n == 1 ? 0 : i);
    ok = R_FINITE(d) && d >= 0 && d == floor(d) && d < (double)spec->strides[i];
    if (ok) out[i] = (int64_t)d;
  }
  if (!ok) {
    set_problem(v, PROBLEM_OUTPUT_PADDING, "output_padding", x, -1);
    v->expected = strides;
  }
}

/* Keras's output length of a transposed convolution along one axis
 * (conv_utils.deconv_output_length) from n inputs, the window's span ke,
 * stride s and output padding op (negative: none). Every term is below 2^62,
 * so the sum cannot overflow. */
static int64_t transposed_length(int64_t n, int64_t ke, int64_t s, int same, int64_t op) {
  if (op < 0) return n * s + (!same && ke > s ? ke - s : 0);
  return (n - 1) * s + ke - 2 * (same ? ke / 2 : 0) + op;
}

void conv_transpose_validate(SEXP cfg, SEXP input_shape, SEXP built_channels,
                             struct conv_spec* spec, int* use_bias, struct validation* v) {
  validation_start(spec, v);
  read_config(cfg, spec, v);
  int64_t op[3] = {-1, -1, -1};
  SEXP pads = list_elt(cfg, "output_padding");
  if (v->problem == PROBLEM_NONE && !Rf_isNull(pads)) {
    read_output_padding(pads, list_elt(cfg, "strides"), spec, op, v);
  }
  if (v->problem != PROBLEM_NONE) return;
  read_input_shape(input_shape, spec, v);
  if (v->problem != PROBLEM_NONE || !channels_match(built_channels, input_shape, spec, v)) return;
  *use_bias = spec->use_bias;
  if (spec->channels < 0) return; /* not built: the arguments alone are checked */
  /* the adjoint convolution, from this layer's output to its input */
  const int64_t filters = spec->filters, in[3] = {spec->in[0], spec->in[1], spec->in[2]};
  spec->filters = spec->channels;
  spec->channels = filters;
  spec->use_bias = 0;
  for (int i = 0; i < 3; ++i) {
    if (in[i] < 0) continue; /* unknown */
    const int64_t ke = (spec->kernel[i] - 1) * spec->dilation[i] + 1;
    spec->in[i] = transposed_length(in[i], ke, spec->strides[i], spec->same, op[i]);
    if (spec->in[i] > INT_MAX) { /* longer than an R array's axis */
      const int wide = spec->kernel[i] > spec->strides[i] * in[i];
      set_problem(v, PROBLEM_TRANSPOSE_OVERFLOW, wide ? "kernel_size" : "strides",
                  list_elt(cfg, wide ? "kernel_size" : "strides"), i);
      return;
    }
    if (spec->in[i] <= 0) { /* 'same', an even window and output padding 0, one input */
      set_problem(v, PROBLEM_TRANSPOSE_LENGTH, "output_padding", pads, i);
      return;
    }
  }
  finish_validation(cfg, input_shape, spec, v);
  if (v->problem == PROBLEM_SIZE_OVERFLOW) { /* the output, grown by the strides or window */
    v->problem = PROBLEM_NONE;
    set_problem(v, PROBLEM_TRANSPOSE_OVERFLOW, "strides", list_elt(cfg, "strides"), -1);
    v->expected = input_shape;
  }
  if (v->problem != PROBLEM_NONE) return;
  spec->n_params += *use_bias ? filters : 0;
  /* the convolution of that output must give back the input's lengths, as
   * TensorFlow's conv3d_transpose requires: 'same' padding with an even
   * window and an output padding of 0 falls one short */
  for (int i = 0; i < 3; ++i) {
    if (in[i] >= 0 && spec->out[i] != in[i]) {
      set_problem(v, PROBLEM_TRANSPOSE_LENGTH, "output_padding", pads, i);
      return;
    }
  }
}

static void weight_problem(struct validation* v, const char* arg, SEXP w, const int64_t* dims,
                           int rank) {
  if (v->problem != PROBLEM_NONE) return;
  set_problem(v, PROBLEM_WEIGHT_SHAPE, arg, w, rank);
  SEXP expected = Rf_allocVector(REALSXP, rank); /* kept alive by the caller's signal */
  for (int i = 0; i < rank; ++i) REAL(expected)[i] = (double)dims[i];
  v->expected = expected;
}

void conv_check_weight(SEXP w, const char* arg, const int64_t* dims, int rank,
                       struct validation* v) {
  if (!is_number_vector(w)) { weight_problem(v, arg, w, dims, rank); return; }
  SEXP d = Rf_getAttrib(w, R_DimSymbol);
  int64_t total = 1;
  for (int i = 0; i < rank; ++i) total *= dims[i];
  if (Rf_isNull(d)) {
    /* a plain vector is accepted for the rank-1 bias only */
    if (rank != 1 || XLENGTH(w) != total) weight_problem(v, arg, w, dims, rank);
    return;
  }
  if (XLENGTH(d) != rank) { weight_problem(v, arg, w, dims, rank); return; }
  for (int i = 0; i < rank; ++i) {
    if (INTEGER(d)[i] != dims[i]) { weight_problem(v, arg, w, dims, rank); return; }
  }
}

/* Pooling layers: pool_size, strides (NULL: the pool size), padding and
 * data_format, with the convolution's shape arithmetic (the spec's kernel is the
 * pool, channels map to themselves). */
void pool_validate(SEXP cfg, SEXP input_shape, struct conv_spec* spec, struct validation* v) {
  static const char* const paddings[] = {"valid", "same"};
  static const char* const formats[] = {"channels_last", "channels_first"};
  validation_start(spec, v);
  read_tuple(list_elt(cfg, "pool_size"), "pool_size", spec->kernel, v);
  SEXP strides = list_elt(cfg, "strides");
  if (Rf_isNull(strides)) {
    for (int i = 0; i < 3; ++i) spec->strides[i] = spec->kernel[i];
  } else {
    read_tuple(strides, "strides", spec->strides, v);
  }
  spec->same = read_choice(list_elt(cfg, "padding"), "padding", paddings, 2, PROBLEM_PADDING, v);
  spec->layout = (enum conv_layout)read_choice(list_elt(cfg, "data_format"), "data_format",
                                               formats, 2, PROBLEM_DATA_FORMAT, v);
  for (int i = 0; i < 3; ++i) spec->dilation[i] = 1;
  spec->groups = 1;
  spec->filters = 1;
  static const char* const dtypes[] = {"float32", "float64"};
  spec->dtype = (enum conv_dtype)read_choice(list_elt(cfg, "dtype"), "dtype", dtypes, 2,
                                             PROBLEM_DTYPE, v);
  if (v->problem != PROBLEM_NONE) return;
  read_input_shape(input_shape, spec, v);
  if (v->problem != PROBLEM_NONE || spec->channels < 0) return;
  spec->filters = spec->channels;
  spec->groups = spec->channels;
  int axis;
  enum conv_problem p = conv_spec_finish(spec, &axis);
  if (p == PROBLEM_OUTPUT_EMPTY || p == PROBLEM_KERNEL_OVERFLOW || p == PROBLEM_WINDOW_OVERFLOW) {
    set_problem(v, p, "pool_size", list_elt(cfg, "pool_size"), axis);
  } else if (p == PROBLEM_WEIGHTS_OVERFLOW) { /* a pooling's channels, each with its window */
    set_problem(v, PROBLEM_SIZE_OVERFLOW, "input shape", input_shape, -1);
  } else if (p != PROBLEM_NONE) {
    set_problem(v, p, "input shape", input_shape, -1);
  }
}
