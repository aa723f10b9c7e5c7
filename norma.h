// Norma: a small deep-learning framework. Include this one header.
#pragma once
#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/tensor.h"
