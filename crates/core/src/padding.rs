//! Zero-padding a row-major tensor's bytes up to a bigger shape and cutting it back: what every
//! backend that runs fixed-shape programs (shape buckets) does to its inputs and outputs.

/// Copies `src` (row-major, shape `from`, `elem` bytes per element) into a zeroed buffer of shape
/// `to`, where every axis of `to` is at least that of `from`.
pub fn pad(src: &[u8], elem: usize, from: &[usize], to: &[usize]) -> Vec<u8> {
    if from == to {
        return src.to_vec();
    }
    let mut out = vec![0u8; to.iter().product::<usize>() * elem];
    copy_block(src, &mut out, elem, from, to, true);
    out
}

/// Cuts `src` of shape `from` down to shape `to` (every axis at most that of `from`).
pub fn unpad(src: &[u8], elem: usize, from: &[usize], to: &[usize]) -> Vec<u8> {
    if from == to {
        return src.to_vec();
    }
    let mut out = vec![0u8; to.iter().product::<usize>() * elem];
    copy_block(src, &mut out, elem, to, from, false);
    out
}

/// Copies the region of shape `small` between a tensor of shape `small` and one of shape `big`
/// (row-major): small → big when `into_big`, else big → small. One contiguous row at a time.
fn copy_block(src: &[u8], dst: &mut [u8], elem: usize, small: &[usize], big: &[usize], into_big: bool) {
    let rank = small.len();
    if small.iter().product::<usize>() == 0 {
        return;
    }
    let row = small.last().copied().unwrap_or(1) * elem;
    let big_strides: Vec<usize> = (0..rank).map(|i| big[i + 1..].iter().product::<usize>() * elem).collect();
    let rows: usize = small[..rank.saturating_sub(1)].iter().product();
    let mut index = vec![0usize; rank.saturating_sub(1)];
    for r in 0..rows {
        let big_off: usize = index.iter().zip(&big_strides).map(|(i, s)| i * s).sum();
        let small_off = r * row;
        if into_big {
            dst[big_off..big_off + row].copy_from_slice(&src[small_off..small_off + row]);
        } else {
            dst[small_off..small_off + row].copy_from_slice(&src[big_off..big_off + row]);
        }
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < small[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_then_unpad_gives_the_tensor_back_with_zeros_between() {
        // [2, 3] of u16 into [3, 4].
        let src: Vec<u8> = (1..=6u16).flat_map(|v| v.to_le_bytes()).collect();
        let padded = pad(&src, 2, &[2, 3], &[3, 4]);
        let values: Vec<u16> = padded.chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(values, [1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0, 0]);
        assert_eq!(unpad(&padded, 2, &[3, 4], &[2, 3]), src);
        assert_eq!(pad(&[7, 8], 2, &[], &[]), [7, 8], "a scalar is itself");
        assert_eq!(pad(&[], 4, &[0, 3], &[2, 3]), [0u8; 24], "an empty tensor pads to zeros");
    }
}
