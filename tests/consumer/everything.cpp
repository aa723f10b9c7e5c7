// One header, really: with only <norma/norma.h>, names every public module,
// op, optimizer, scheduler, loss, BatchNorm preset and I/O function (a name
// missing from norma.h fails the build), links them from norma::train and
// norma::norma (a definition missing from the installed libraries fails the
// link), then trains one step of a built-in model. Exits non-zero when a value
// is wrong. public_headers.cmake checks that every public header is reachable
// from norma.h; this program checks that the names are usable through it.
#include <norma/norma.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

using namespace norma;

namespace {

// A type is named when it is complete here; a function when its address links.
// Called as (named_functions)(...): no argument-dependent lookup, which would
// complete nn::TrainingState, whose JSON member is only declared here.
template <class... T>
size_t named_types() {
  return ((sizeof(T) > 0) + ...);
}
template <class... F>
size_t named_functions(F... f) {
  return ((f != nullptr) + ...);
}

size_t name_everything() {
  size_t n = 0;
  // core/: tensor, ops, autograd, allocator, anomaly mode, gradcheck, kernel policy, I/O, errors.
  n += named_types<Shape, Storage, Tensor, GeneratorState, NoGradGuard, AllocatorStats, autograd::DetectAnomalyGuard,
                   GradcheckOptions, GradcheckResult, KernelPolicy, KernelPolicyGuard, SafetensorsFile, Error,
                   AtomicFile, Node>();
  n += (named_functions)(&empty, &zeros, &ones, &full, &zeros_like, &ones_like, &empty_like, &scalar_tensor,
                       &from_vector, &norma::rand, &randn, &uniform, &normal, &manual_seed, &get_rng_state,
                       &set_rng_state, &random_u32, &random_uniform, &random_normal, &shape_str, &broadcast_shapes,
                       &to_string);
  n += (named_functions)(&add, &sub, &mul, &norma::div, &maximum, &minimum, &eq, &ne, &lt, &le, &gt, &ge, &where, &neg,
                       &norma::exp, &norma::log, &norma::sqrt, &rsqrt, &norma::abs, &relu, &norma::pow, &sum, &mean,
                       &var, &norma::max, &matmul, &set_num_threads, &get_num_threads);
  n += (named_functions)(&allocator_stats, &reset_allocator_peak, &empty_cache, &autograd::set_detect_anomaly,
                       &autograd::is_anomaly_enabled, &gradcheck, &fast_kernels_built, &kernel_policy, &set_kernel_policy,
                       &save_safetensors, &load_safetensors, &grad_mode_enabled, &set_grad_mode);
  Tensor t = ones({2, 3});
  n += argmax(t).numel() + argmax(t, 1).numel() + arange(3.0f).numel() + tensor({1, 2}).numel();
  // core/dist/: process groups (the MPI one is named by the mpi component's consumer).
  n += named_types<dist::ProcessGroup>();
  n += (named_functions)(&dist::single_process);
  // layers/: modules, their ops, fusion, init, losses, BatchNorm presets, serialisation.
  n += named_types<nn::Module, nn::Linear, nn::Conv2d, nn::Conv2dOptions, nn::BatchNorm2d, nn::BatchNorm2dOptions,
                   nn::BatchNormArgs, nn::MomentumRule, nn::ReLU, nn::Flatten, nn::Dropout, nn::MaxPool2d,
                   nn::AvgPool2d, nn::AdaptiveAvgPool2d, nn::BasicBlock, nn::Sequential, nn::CrossEntropyLoss,
                   nn::NLLLoss, nn::MSELoss, nn::FusedStep, nn::Layout, nn::VarianceMethod, nn::SyncRule,
                   nn::Reduction, nn::init::FanMode, nn::init::Nonlinearity, nn::bn_presets::BrainPyVersion, nn::bn_presets::PuzzleLibOptions>();
  n += (named_functions)(&nn::linear, &nn::conv2d, &nn::batch_norm2d, &nn::batch_norm2d_composite, &nn::dropout,
                       &nn::max_pool2d, &nn::avg_pool2d, &nn::adaptive_avg_pool2d, &nn::cross_entropy,
                       &nn::nll_loss, &nn::mse_loss, &nn::batch_norm_relu, &nn::batch_norm_relu_pool,
                       &nn::conv_bn_relu, &nn::conv_bn_relu_eval, &nn::plan_fusion, &nn::run_fused,
                       &nn::fuse_conv_bn, &nn::fuse_conv_bn_eval, &nn::save, &nn::load);
  n += (named_functions)(&nn::init::calculate_fan_in_and_fan_out, &nn::init::uniform_, &nn::init::normal_,
                       &nn::init::constant_, &nn::init::zeros_, &nn::init::ones_, &nn::init::kaiming_uniform_,
                       &nn::init::kaiming_normal_, &nn::init::xavier_uniform_, &nn::init::xavier_normal_);
  n += nn::init::calculate_gain(nn::init::Nonlinearity::relu) > 0;
  n += (named_functions)(&nn::bn_presets::pytorch, &nn::bn_presets::r_torch, &nn::bn_presets::megengine,
                       &nn::bn_presets::brainpy, &nn::bn_presets::brainpy_2_7, &nn::bn_presets::brainpy_2_8,
                       &nn::bn_presets::numpy_ml,
                       static_cast<nn::BatchNorm2dOptions (*)(int64_t, const nn::bn_presets::PuzzleLibOptions&)>(
                           &nn::bn_presets::puzzlelib),
                       static_cast<nn::BatchNorm2dOptions (*)(int64_t, double, double, double, bool, bool, bool)>(
                           &nn::bn_presets::puzzlelib),
                       &nn::bn_presets::preset_names, &nn::bn_presets::preset_by_name,
                       &nn::bn_presets::pytorch_momentum_from_decay, &nn::bn_presets::decay_from_pytorch_momentum,
                       &nn::bn_presets::from_megengine_state_dict, &nn::bn_presets::to_megengine_state_dict);
  // optim/: optimizers, state, schedulers (state dicts' JSON is declared only).
  n += named_types<optim::ParamGroup, optim::ParamState, optim::SGD, optim::Adam, optim::AdamW, optim::StepLR,
                   optim::MultiStepLR, optim::LinearLR, optim::CosineAnnealingLR, optim::OneCycleLR,
                   optim::OneCycleOptions, optim::SequentialLR, optim::ChainedScheduler>();
  n += (named_functions)(&optim::single_group, &optim::options_to_json);
  // data/: CIFAR, loader, transforms, hashes.
  n += named_types<data::CifarDataset, data::DataLoader, data::LoaderOptions, data::Batch, data::Augment,
                   data::Sha256, data::Split, data::CifarKind>();
  n += (named_functions)(&data::sha256_hex, &data::sha256_file, &data::draw_augment, &data::crop_flip,
                       &data::to_float);
  // apps/ (norma::train): trainer, checkpoints, built-in models, BatchNorm statistics, download, MD5.
  n += named_types<app::TrainConfig, app::TrainParts, app::TrainResult, app::EvalResult, app::EvalConfig, app::Progress,
                   nn::CifarSmall, nn::BnStatsRecorder, nn::BnStatsRow, data::Md5>();
  n += (named_functions)(&app::build_model, static_cast<app::TrainResult (*)(const app::TrainConfig&)>(&app::train),
                       static_cast<app::TrainResult (*)(nn::Module&, const app::TrainConfig&, const app::TrainParts&)>(
                           &app::train),
                       &nn::register_model, &app::evaluate, &app::evaluate_checkpoint,
                       &nn::save_checkpoint, &nn::load_checkpoint, &nn::cifar_small, &nn::resnet8,
                       &nn::make_model, &nn::model_names, &nn::summary, &data::download_cifar10,
                       &data::find_cifar10_dir, &data::md5_hex, &data::md5_file);
  return n;
}

}  // namespace

int main() {
  const size_t names = name_everything();

  // One SGD step with a one-cycle schedule on cifar-small, on 2 random images.
  manual_seed(0);
  auto model = nn::make_model("cifar-small", [](int64_t c) -> nn::ModulePtr {
    return std::make_shared<nn::BatchNorm2d>(nn::bn_presets::pytorch(c));
  });
  optim::SGD opt(optim::decay_groups(*model, 5e-4), 0.1, 0.9, 0, 0, true);
  optim::OneCycleLR sched(opt, 0.2, 10);
  Tensor x = randn({2, 3, 32, 32});
  Tensor y = from_vector({3, 7}, {2});
  Tensor loss = nn::cross_entropy((*model)(x), y);
  opt.zero_grad();
  loss.backward();
  opt.step();
  sched.step();
  const float after = nn::cross_entropy((*model)(x), y).item();

  // Saved weights load back; the hashes give their known digests.
  const auto path = std::filesystem::temp_directory_path() / "norma_everything.safetensors";
  nn::save(*model, path.string());
  auto again = nn::make_model("cifar-small");
  nn::load(*again, path.string());
  std::filesystem::remove(path);
  const bool same = (again->parameters()[0] - model->parameters()[0]).abs().sum().item() == 0;
  const bool md5 = data::md5_hex("abc", 3) == "900150983cd24fb0d6963f7d28e17f72";
  const bool sha = data::sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

  const bool ok = names > 100 && std::isfinite(loss.item()) && std::isfinite(after) && after != loss.item() && same &&
                  md5 && sha && nn::model_names().size() >= 3;
  std::printf("%zu names; loss %.4f -> %.4f; weights reload %s; md5 %s, sha256 %s: %s\n", names, loss.item(),
              after, same ? "alike" : "DIFFER", md5 ? "ok" : "WRONG", sha ? "ok" : "WRONG", ok ? "ok" : "WRONG");
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
