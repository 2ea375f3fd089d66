//! Steps several plugins share where a CNI result meets the kernel.
