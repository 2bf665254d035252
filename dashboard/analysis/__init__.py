"""Measuring a network, without Streamlit or plotly:

probe, hooks, receptive_fields, summary, shipped_flows   shape flow, activations, windows
graph                                                    the dataflow graph (torch.fx)
metrics, confusion, class_levels, evaluation             predictions and what they say
inputs, activation_maps, filters, gradcam                one image, one layer, its filters
attribution, sanity, faithfulness                        attribution maps and their checks
atlas, feature_vis, channels                             what each channel responds to
representations, projections, picks                      how each layer sees the data
dynamics                                                 training's record, read for figures
lab/                                                     the Convolution lab's arithmetic
"""
