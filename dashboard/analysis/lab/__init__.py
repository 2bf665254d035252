"""The arithmetic of convolution and pooling, written out with its numbers (the Convolution lab).

Everything here is computed directly from its definition, apart from PyTorch, so the tests can
hold it against `F.conv2d`, `F.max_pool2d`, `F.avg_pool2d` and the model's own activations:

- a worked 2-D convolution: padded input, output-size formula per axis with the chosen numbers,
  every output position's window and its multiply-add ("3·1 + 4·2 + … = 87");
- several channels (per-channel partial results and their sum), 1×1 convolution as channel
  mixing, and the parameter arithmetic of a ResNet bottleneck;
- max and average pooling, position by position;
- im2col: the unrolled input, the kernel matrix, their product and the reshape back;
- any neuron of a loaded model: its receptive window in the layer's input, the weights, the
  products and the sum, beside the value the model computed;
- classic edge kernels (Prewitt, Sobel) on an image, beside the model's first layer.

Convolution here is cross-correlation, as in PyTorch: the kernel is not flipped. Integer inputs
stay integers (int64) so the preset examples come out exact; anything else is float64.

The lab's data flow: `lab_inputs` (typed numbers and presets → arrays) → the arithmetic →
`figures/lab.py` (styled grids, tables, sentences and figures, no Streamlit). The arithmetic is
split by subject: `lab_conv` (numbers as text, sizes, one channel), `lab_channels` (several
channels, 1×1, bottleneck, im2col), `lab_pooling`, `lab_neurons` (a loaded model's neurons,
classic kernels); this module gathers their names, so the page and the figures use `lab.X`.
"""

from __future__ import annotations

from dashboard.analysis.lab.channels import Bottleneck as Bottleneck
from dashboard.analysis.lab.channels import ConvCost as ConvCost
from dashboard.analysis.lab.channels import Im2Col as Im2Col
from dashboard.analysis.lab.channels import MultiChannelConv as MultiChannelConv
from dashboard.analysis.lab.channels import PointwiseMixing as PointwiseMixing
from dashboard.analysis.lab.channels import bottleneck_params as bottleneck_params
from dashboard.analysis.lab.channels import im2col as im2col
from dashboard.analysis.lab.channels import im2col_worked as im2col_worked
from dashboard.analysis.lab.channels import multichannel_worked as multichannel_worked
from dashboard.analysis.lab.channels import pointwise_mixing as pointwise_mixing
from dashboard.analysis.lab.channels import torch_conv2d as torch_conv2d
from dashboard.analysis.lab.conv import MINUS as MINUS
from dashboard.analysis.lab.conv import AxisSize as AxisSize
from dashboard.analysis.lab.conv import Step as Step
from dashboard.analysis.lab.conv import WorkedConv as WorkedConv
from dashboard.analysis.lab.conv import axis_size as axis_size
from dashboard.analysis.lab.conv import conv2d_worked as conv2d_worked
from dashboard.analysis.lab.conv import fmt as fmt
from dashboard.analysis.lab.conv import multiply_add as multiply_add
from dashboard.analysis.lab.conv import step_at as step_at
from dashboard.analysis.lab.conv import steps as steps
from dashboard.analysis.lab.conv import term as term
from dashboard.analysis.lab.conv import written_sum as written_sum
from dashboard.analysis.lab.neurons import NEURON_TYPES as NEURON_TYPES
from dashboard.analysis.lab.neurons import FirstLayer as FirstLayer
from dashboard.analysis.lab.neurons import NeuronArithmetic as NeuronArithmetic
from dashboard.analysis.lab.neurons import classic_responses as classic_responses
from dashboard.analysis.lab.neurons import first_layer_responses as first_layer_responses
from dashboard.analysis.lab.neurons import neuron_arithmetic as neuron_arithmetic
from dashboard.analysis.lab.neurons import neuron_layers as neuron_layers
from dashboard.analysis.lab.pooling import PoolStep as PoolStep
from dashboard.analysis.lab.pooling import WorkedPool as WorkedPool
from dashboard.analysis.lab.pooling import pool_step_at as pool_step_at
from dashboard.analysis.lab.pooling import pool_steps as pool_steps
from dashboard.analysis.lab.pooling import pool_worked as pool_worked
