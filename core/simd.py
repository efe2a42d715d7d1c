"""Eight-lane float32 vectors for the numba kernels: one vector is eight neighbouring pixels.

numba's autovectoriser only vectorises long innermost loops over memory, so a kernel that
keeps a tile's accumulators in registers (the year-by-year Gram matrix) or sorts eight
pixels' series at once has to say so itself. These intrinsics give numba a `float32x8`
value (an LLVM <8 x float>, a ymm register on AVX2) and a `mask8` (<8 x i1>), with plain
element-wise operations that LLVM lowers for whatever CPU it compiles for.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 8
_FLOAT = ir.FloatType()
_VECTOR = ir.VectorType(_FLOAT, LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)


class Float32x8(types.Type):
    def __init__(self):
        super().__init__(name="float32x8")


class Mask8(types.Type):
    def __init__(self):
        super().__init__(name="mask8")


float32x8 = Float32x8()
mask8 = Mask8()


@register_model(Float32x8)
class _Float32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


@register_model(Mask8)
class _Mask8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _MASK)


def _element_pointer(context, builder, array_type, array, index):
    """Pointer to element `index` of a C-contiguous array, counted in elements of the flat array."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


def _check_array(array):
    if not isinstance(array, types.Array) or array.layout != "C":
        raise TypeError(f"simd needs a C-contiguous array, got {array}")


@intrinsic
def load(typingctx, array, index):
    """array.flat[index:index + 8] as float32 (integers converted, float64 rounded)."""
    _check_array(array)
    unsigned = isinstance(array.dtype, types.Integer) and not array.dtype.signed

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        element = pointer.type.pointee
        vector_pointer = builder.bitcast(pointer, ir.VectorType(element, LANES).as_pointer())
        raw = builder.load(vector_pointer, align=1)
        if isinstance(element, ir.IntType):
            return builder.uitofp(raw, _VECTOR) if unsigned else builder.sitofp(raw, _VECTOR)
        if isinstance(element, ir.DoubleType):
            return builder.fptrunc(raw, _VECTOR)
        return raw

    return float32x8(array, index), codegen


@intrinsic
def store(typingctx, array, index, vector):
    """array.flat[index:index + 8] = vector (a float32 array)."""
    _check_array(array)
    if array.dtype != types.float32:
        raise TypeError("simd.store writes float32 arrays")

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(pointer, _VECTOR.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(array, index, vector), codegen


@intrinsic
def transpose_pieces(typingctx, source, start, source_step, target, to, target_step):
    """Four runs of four 8-element pieces, transposed: piece m of source run q (the run at
    start + q * source_step) goes to target run m (at to + m * target_step), in place q.

    One dtype, unconverted; for int8 that is four loads, eight shuffles and four stores.
    """
    _check_array(source)
    _check_array(target)
    if source.dtype != target.dtype:
        raise TypeError("simd.transpose_pieces moves values between arrays of one dtype")

    def codegen(context, builder, sig, args):
        source_array, start, source_step, target_array, to, target_step = args
        element = context.get_data_type(sig.args[0].dtype)
        piece = ir.IntType(LANES * 8 * context.get_abi_sizeof(element))
        run = ir.VectorType(piece, 4)

        def run_pointer(array_type, array, first, step, q):
            index = builder.add(first, builder.mul(step, ir.Constant(step.type, q)))
            pointer = _element_pointer(context, builder, array_type, array, index)
            return builder.bitcast(pointer, run.as_pointer())

        a, b, c, d = (
            builder.load(run_pointer(sig.args[0], source_array, start, source_step, q), align=1)
            for q in range(4)
        )

        def shuffle(x, y, *order):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), 4), list(order))
            return builder.shuffle_vector(x, y, mask)

        ab_even, ab_odd = shuffle(a, b, 0, 4, 2, 6), shuffle(a, b, 1, 5, 3, 7)
        cd_even, cd_odd = shuffle(c, d, 0, 4, 2, 6), shuffle(c, d, 1, 5, 3, 7)
        pieces = (
            shuffle(ab_even, cd_even, 0, 1, 4, 5),
            shuffle(ab_odd, cd_odd, 0, 1, 4, 5),
            shuffle(ab_even, cd_even, 2, 3, 6, 7),
            shuffle(ab_odd, cd_odd, 2, 3, 6, 7),
        )
        for m, value in enumerate(pieces):
            pointer = run_pointer(sig.args[3], target_array, to, target_step, m)
            builder.store(value, pointer, align=1)
        return context.get_dummy_value()

    signature = types.none(source, start, source_step, target, to, target_step)
    return signature, codegen


@intrinsic
def splat(typingctx, value):
    """A vector with `value` in every lane."""

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[0], sig.args[0], types.float32)
        vector = builder.insert_element(
            ir.Constant(_VECTOR, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0)
        )
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(vector, vector, zeros)

    return float32x8(value), codegen


def _elementwise(instruction, result):
    """An intrinsic applying the IR builder's `instruction` to two vectors (or masks)."""

    @intrinsic
    def operation(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, instruction)(*args)

        return result(a, b), codegen

    return operation


add = _elementwise("fadd", float32x8)
sub = _elementwise("fsub", float32x8)
mul = _elementwise("fmul", float32x8)
div = _elementwise("fdiv", float32x8)


def _declare(builder, name, arity):
    function_type = ir.FunctionType(_VECTOR, [_VECTOR] * arity)
    return cgutils.get_or_insert_function(builder.module, function_type, name)


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c, fused where the CPU can."""

    def codegen(context, builder, sig, args):
        return builder.call(_declare(builder, "llvm.fmuladd.v8f32", 3), args)

    return float32x8(a, b, c), codegen


def _unary(name):
    @intrinsic
    def operation(typingctx, a):
        def codegen(context, builder, sig, args):
            return builder.call(_declare(builder, name, 1), args)

        return float32x8(a), codegen

    return operation


sqrt = _unary("llvm.sqrt.v8f32")
absolute = _unary("llvm.fabs.v8f32")


def _comparison(predicate, ordered=True):
    @intrinsic
    def compare(typingctx, a, b):
        def codegen(context, builder, sig, args):
            if ordered:
                return builder.fcmp_ordered(predicate, *args)
            return builder.fcmp_unordered(predicate, *args)

        return mask8(a, b), codegen

    return compare


less = _comparison("<")
greater = _comparison(">")
greater_equal = _comparison(">=")
equal = _comparison("==")
is_nan = _comparison("uno", ordered=False)  # is_nan(v, v): true in the lanes holding NaN


@intrinsic
def select(typingctx, mask, a, b):
    """Lane-wise `a if mask else b`."""

    def codegen(context, builder, sig, args):
        return builder.select(*args)

    return float32x8(mask, a, b), codegen


both = _elementwise("and_", mask8)
either = _elementwise("or_", mask8)


@intrinsic
def negate(typingctx, mask):
    def codegen(context, builder, sig, args):
        return builder.not_(args[0])

    return mask8(mask), codegen


@intrinsic
def minimum(typingctx, a, b):
    """Lane-wise min of NaN-free vectors (a compare and a blend, as a sorting network needs)."""

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered("<", *args), *args)

    return float32x8(a, b), codegen


@intrinsic
def maximum(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", *args), *args)

    return float32x8(a, b), codegen
