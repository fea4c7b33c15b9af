"""The statistics that decide for people: auto-accept thresholds and reviewer agreement.

Plain functions over plain sequences (numpy and scipy only), with no Django import, for
two reasons. They can be checked by simulation against a known truth, thousands of
draws in a second, without a database; and the services that use them (auto-accept,
reviewer statistics) and the management command stay thin: they fetch the sample,
call one function here and record what it returns. Each function's docstring states
its method, its assumptions and the sample it needs.
"""
